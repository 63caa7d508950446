// The engine's public name for platform/device_allocator.h (the layer below engine and kernels).
#pragma once
#include "platform/device_allocator.h"
