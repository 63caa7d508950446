#include <doctest/doctest.h>
TEST_CASE("placeholder nn_ops") {}
