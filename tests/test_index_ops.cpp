#include <doctest/doctest.h>
TEST_CASE("placeholder index_ops") {}
