// A checker of the Prometheus text exposition format (0.0.4), independent of the
// writer in runtime/server/prometheus.cpp: tests run it on /metrics output, and where
// promtool is installed they run `promtool check metrics` too. Test support only (the
// test_support library of tests/meson.build), not part of libbet.
#pragma once
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace bet::test::prom {

struct ExpositionReport {
  std::vector<std::string> problems;       // empty when the text is well-formed
  std::map<std::string, double> samples;   // "name{labels as written}" -> value
  std::map<std::string, std::string> types;  // family -> counter|gauge|histogram|summary|untyped
};

// Checks that every sample line parses (name, labels with escapes, value, optional
// timestamp), belongs to a family whose # TYPE came before it, that a family's # HELP
// and # TYPE appear once and its samples are contiguous, and that every histogram
// series has cumulative buckets with increasing le, a le="+Inf" bucket equal to its
// _count, and a _sum.
ExpositionReport check_exposition(std::string_view text);

}  // namespace bet::test::prom
