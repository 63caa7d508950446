// The engine's public name for platform/allocator.h (the layer below engine and kernels).
#pragma once
#include "platform/allocator.h"
