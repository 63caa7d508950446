// The engine's public name for platform/error.h (the layer below engine and kernels).
#pragma once
#include "platform/error.h"
