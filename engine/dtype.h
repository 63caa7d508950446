// The engine's public name for platform/dtype.h (the layer below engine and kernels).
#pragma once
#include "platform/dtype.h"
