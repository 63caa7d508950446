#include "engine/autocast.h"

#include "platform/error.h"

namespace bet {

namespace {
thread_local DType g_autocast = DType::F32;
}

DType autocast_dtype() { return g_autocast; }

AutocastGuard::AutocastGuard(DType compute) : prev_(g_autocast) {
  BET_CHECK(compute == DType::F32 || compute == DType::BF16, "autocast: compute dtype must be f32 or bf16, got ",
            dtype_name(compute));
  g_autocast = compute;
}

AutocastGuard::~AutocastGuard() { g_autocast = prev_; }

DType parse_precision(const std::string& s) {
  if (s == "f32" || s == "fp32") return DType::F32;
  if (s == "bf16") return DType::BF16;
  fail("--precision ", s, ": expected f32 or bf16");
}

}  // namespace bet
