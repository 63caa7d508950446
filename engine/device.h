// The engine's public name for platform/device.h (the layer below engine and kernels).
#pragma once
#include "platform/device.h"
