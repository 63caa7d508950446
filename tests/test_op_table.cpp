// The op table's CPU drivers (tests/op_table.h): every op declared in engine/ops.h has
// a row; every differentiable op's gradients against f64 finite differences; f32
// against f64, forward and backward; PyTorch's reference values; the bench cases run.
// The GPU driver is tests/test_cuda_ops.cpp.
#include <doctest/doctest.h>

#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "bet_config.h"
#include "tests/gradcheck.h"
#include "tests/op_table_check.h"

using namespace bet;
using namespace bet::optable;

namespace {

// The functions declared at namespace scope in a header's text, with their number of
// overloads: comments, string literals and preprocessor lines dropped, bodies (of inline
// functions, structs) skipped; `operator...` excluded (sugar over the named ops).
std::map<std::string, int> declared_functions(const std::string& text) {
  std::string code;
  bool line_start = true;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (line_start && c == '#') {
      while (i < text.size() && text[i] != '\n') ++i;
      code += '\n';
    } else if (text.compare(i, 2, "//") == 0) {
      while (i < text.size() && text[i] != '\n') ++i;
      code += '\n';
    } else if (text.compare(i, 2, "/*") == 0) {
      const size_t e = text.find("*/", i + 2);
      i = e == std::string::npos ? text.size() : e + 1;
      code += ' ';
    } else if (c == '"') {
      for (++i; i < text.size() && text[i] != '"'; ++i)
        if (text[i] == '\\') ++i;
      code += "\"\"";
    } else {
      code += c;
    }
    if (i < text.size()) line_start = text[i] == '\n' || (line_start && (text[i] == ' ' || text[i] == '\t'));
  }
  // A statement: the text since the last ';', '{' or '}'. Declarations are the
  // statements outside every body (namespaces are not bodies).
  static const std::regex decl(R"(^\s*(?:template\s*<[^>]*>\s*)?(?:(?:inline|static|constexpr|extern)\s+)*)"
                               R"([A-Za-z_][\w:]*(?:\s*<[^;{}()]*>)?(?:\s*[*&]+)?\s+[*&]*\s*([A-Za-z_]\w*)\s*\()");
  static const std::regex ns(R"(^\s*(?:inline\s+)?namespace\b)");
  static const std::regex keyword(R"(^\s*(?:return|else|case|new|delete|throw|using|typedef|struct|class|enum|union)\b)");
  std::map<std::string, int> found;
  std::vector<bool> open;  // per open brace: a body (true) or a namespace (false)
  int bodies = 0;
  std::string stmt;
  for (char c : code) {
    if (c != '{' && c != ';' && c != '}') {
      stmt += c;
      continue;
    }
    if (bodies == 0 && c != '}') {
      std::smatch m;
      if (!std::regex_search(stmt, keyword) && std::regex_search(stmt, m, decl) && m[1].str().rfind("operator", 0) != 0)
        ++found[m[1].str()];
    }
    if (c == '{') {
      const bool body = !std::regex_search(stmt, ns);
      open.push_back(body);
      bodies += body;
    } else if (c == '}' && !open.empty()) {
      bodies -= open.back();
      open.pop_back();
    }
    stmt.clear();
  }
  return found;
}

std::string read_text(const std::string& path) {
  std::ifstream f(path);
  REQUIRE_MESSAGE(f.good(), "cannot read " << path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Floating inputs of `op` that finite differences check.
bool differentiated(const OpInfo& op, const Inputs& in, size_t i) {
  return in[i].defined() && is_floating(in[i].dtype()) && !op.is_nondiff(i);
}

}  // namespace

TEST_CASE("the declaration parser finds functions, overloads, and skips inline bodies and operators") {
  const std::string h = R"(
    namespace bet {
    // Tensor commented_out(const Tensor& a);
    Tensor reshape(const Tensor& a, Shape shape);  // one dim may be -1
    Tensor add(const Tensor& a, const Tensor& b);
    Tensor add(const Tensor& a, double s);
    std::vector<Tensor> split(const Tensor& a,
                              const std::vector<int64_t>& sizes, int64_t dim);
    int64_t count_valid(const Tensor& targets, int64_t ignore_index = -100);
    inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
    inline Tensor twice(const Tensor& a) {
      Tensor b = mul(a, 2.0);
      return add(b, b);
    }
    struct Options { int x = 0; };
    /* Tensor block_commented(const Tensor& a); */
    Tensor brand_new_op(const Tensor& a);
    }  // namespace bet
  )";
  const std::map<std::string, int> want = {{"reshape", 1}, {"add", 2},   {"split", 1},
                                           {"count_valid", 1}, {"twice", 1}, {"brand_new_op", 1}};
  CHECK(declared_functions(h) == want);
}

TEST_CASE("every op declared in engine/ops.h has a row (overloads counted)") {
  const std::map<std::string, int> declared = declared_functions(read_text(std::string(BET_SOURCE_DIR) + "/engine/ops.h"));
  REQUIRE(declared.size() > 40);  // the parser read the real header
  std::map<std::string, int> rows;
  std::set<std::string> names;
  for (const OpInfo& op : op_table()) {
    ++rows[op.decl];
    CHECK_MESSAGE(names.insert(op.name).second, "two rows named " << op.name);
  }
  for (const auto& [name, n] : declared) {
    CAPTURE(name);
    CHECK_MESSAGE(rows[name] >= n, "engine/ops.h declares " << name << " " << n << " time(s); the op table (tests/op_table.h) has "
                                                            << rows[name] << " row(s) for it");
  }
  for (const auto& [name, n] : rows)
    CHECK_MESSAGE(declared.count(name), "the op table has a row for " << name << ", which engine/ops.h does not declare");
  MESSAGE("op table: " << op_table().size() << " rows for " << declared.size() << " functions of engine/ops.h");
}

TEST_CASE("every row is complete: samples of each kind it needs, dtypes, a gradient sample") {
  size_t samples = 0;
  for (const OpInfo& op : op_table()) {
    CAPTURE(op.name);
    CHECK(op.fn);
    CHECK_FALSE(op.samples.empty());
    samples += op.samples.size();
    unsigned have = 0;
    bool fd = false;
    for (const Sample& s : op.samples) {
      have |= s.tags;
      fd |= s.fd;
      CHECK_MESSAGE((s.make != nullptr) != s.ref.defined(), op.name << " | " << s.name << ": inputs made or read, one of the two");
    }
    for (unsigned tag : {kBroadcast, kStrided, kSize1, kEmpty}) {
      bool waived = false;
      for (const auto& [t, why] : op.waived) waived |= t == tag && !why.empty();
      const bool needed = tag != kBroadcast || op.broadcasts;
      if (needed && !waived)
        CHECK_MESSAGE((have & tag) != 0, op.name << " has no " << tag_name(tag) << " sample (add one, or waive it saying why)");
    }
    if (op.differentiable) CHECK_MESSAGE(fd, op.name << " is differentiable but no sample runs finite differences");
    bool f32 = false, f64 = false;
    for (DType d : op.dtypes) f32 |= d == DType::F32, f64 |= d == DType::F64;
    CHECK((f32 && f64));
  }
  MESSAGE("op table: " << samples << " samples");
}

namespace {

// ---------------------------------------------------------------- the drivers
// Each returns its failures for one sample (empty: it passed).

// f64 finite differences against backward(): every differentiable input at once, then
// (with several) each one alone, since an op must give an input's gradient whichever of
// the others require one.
std::vector<std::string> fd_errors(const OpInfo& op, const Sample& s, int* checks = nullptr) {
  const std::string name = case_name(op, s);
  const Inputs base = sample_inputs(s);
  std::vector<size_t> diff;
  for (size_t i = 0; i < base.size(); ++i)
    if (differentiated(op, base, i)) diff.push_back(i);
  if (diff.empty()) return {name + ": no floating input to differentiate"};
  std::vector<std::vector<size_t>> sets = {diff};
  if (diff.size() > 1)
    for (size_t i : diff) sets.push_back({i});
  std::vector<std::string> errors;
  for (const auto& set : sets) {
    Inputs in;
    for (size_t i = 0; i < base.size(); ++i) {
      Tensor x = base[i].defined() ? base[i].detach() : base[i];
      for (size_t k : set)
        if (k == i) x = testing::leaf(base[i].clone().detach());
      in.push_back(x);
    }
    try {
      const auto r = testing::gradcheck([&op, &s](const Inputs& x) { return run_sample(op, s, x); }, in);
      if (!r.ok())
        errors.push_back(name + " (" + std::to_string(set.size()) + " input(s) requiring grad): " + r.summary());
    } catch (const std::exception& e) {
      errors.push_back(name + ": threw: " + e.what());
    }
    if (checks) ++*checks;
  }
  return errors;
}

// The CPU in f32 against the CPU in f64, forward and backward (the GPU harness's check).
std::vector<std::string> f32_errors(const OpInfo& op, const Sample& s) {
  return test::gpu::check_case(gpu_case(op, s), Device::cpu(), DType::F32, Device::cpu(), DType::F64,
                               test::gpu::tol_for(DType::F32, 10.0 * s.tol));
}

// PyTorch's values (forward, and the gradients the reference holds), in f64 and f32.
std::vector<std::string> ref_errors(const OpInfo& op, const Sample& s) {
  const std::string name = case_name(op, s);
  std::vector<std::string> errors;
  for (DType dt : {DType::F64, DType::F32}) {
    const std::string at = name + " (" + dtype_name(dt) + ")";
    Inputs in = sample_inputs(s);
    for (size_t i = 0; i < in.size(); ++i)
      if (is_floating(in[i].dtype())) {
        in[i] = in[i].to(dt).detach();
        if (op.differentiable && !op.is_nondiff(i)) in[i].set_requires_grad();
      }
    const test::gpu::Tol tol =
        dt == DType::F64 ? test::gpu::Tol{1e-12 * s.tol, 1e-10 * s.tol} : test::gpu::tol_for(DType::F32, s.tol);
    try {
      const Tensor out = run_sample(op, s, in);
      Tensor want = ref_at(s.ref.file, s.ref.out, DType::F64);
      Tensor got = out.detach();
      if (want.numel() == got.numel() && want.shape() != got.shape()) want = reshape(want, got.shape());  // a flat list
      if (is_floating(got.dtype())) got = got.to(DType::F64);
      if (!is_floating(got.dtype())) want = want.to(got.dtype());
      const std::string e = test::gpu::compare(got, want, tol);
      if (!e.empty()) errors.push_back(at + ": forward: " + e);
      if (s.ref.grads.empty()) continue;
      out.backward(s.ref.grad_out.empty() ? Tensor::ones(out.shape(), dt) : ref_at(s.ref.file, s.ref.grad_out, dt));
      for (const auto& [i, ptr] : s.ref.grads) {
        if (!in[i].grad().defined()) {
          errors.push_back(at + ": no gradient for input " + std::to_string(i));
          continue;
        }
        const std::string ge = test::gpu::compare(in[i].grad().to(DType::F64), ref_at(s.ref.file, ptr, DType::F64), tol);
        if (!ge.empty()) errors.push_back(at + ": gradient of input " + std::to_string(i) + ": " + ge);
      }
    } catch (const std::exception& e) {
      errors.push_back(at + ": threw: " + e.what());
    }
  }
  return errors;
}

// out = x * c, recorded with a backward that is wrong on element `bad` (sign flipped).
Tensor wrong_backward(const Tensor& x, int64_t bad) {
  const Tensor c = testing::rand64(x.shape(), 77, 0.5, 1.5);
  std::vector<double> k(size_t(x.numel()), 1.0);
  if (bad < x.numel()) k[size_t(bad)] = -1.0;
  const Tensor kk = Tensor::from_vector<double>(k, x.shape()).to(x.dtype());
  Tensor out;
  {
    autograd::NoGradGuard ng;
    out = mul(x, c.to(x.dtype()));
  }
  return autograd::record("wrong_backward", out, {x}, [c, kk](const Tensor& g) {
    return std::vector<Tensor>{mul(mul(g, c.to(g.dtype())), kk)};
  });
}

}  // namespace

TEST_CASE("the drivers fail a row whose backward or values are wrong") {
  OpInfo op;
  op.name = op.decl = "wrong_backward";
  op.fn = [](const Inputs& x, const Args& a) { return wrong_backward(x[0], int64_t(a[0])); };
  op.args = {3};
  Sample& s = op.sample("[2, 4]", [] { return Inputs{U({2, 4}, 1)}; });
  CHECK_FALSE(fd_errors(op, s).empty());
  // f32 against f64 cannot see a backward wrong the same way in both; finite differences can.
  CHECK(f32_errors(op, s).empty());
  op.args = {100};  // a correct backward
  CHECK(fd_errors(op, s).empty());
  // Values that differ from the reference's.
  Sample& r = op.ref_sample("torch", {"elementwise.json", {{"/binary/a", DType::F64}}, "/binary/add"});
  CHECK_FALSE(ref_errors(op, r).empty());
}

TEST_CASE("finite-difference gradients (f64, CPU) of every differentiable op") {
  int checks = 0;
  for (const OpInfo& op : op_table()) {
    if (!op.differentiable) continue;
    for (const Sample& s : op.samples)
      if (s.fd)
        for (const std::string& e : fd_errors(op, s, &checks)) FAIL_CHECK(e);
  }
  MESSAGE(checks << " finite-difference checks");
}

TEST_CASE("CPU f32 against f64, forward and backward, every sample") {
  int n = 0;
  for (const OpInfo& op : op_table())
    for (const Sample& s : op.samples) {
      for (const std::string& e : f32_errors(op, s)) FAIL_CHECK(e);
      ++n;
    }
  MESSAGE(n << " samples, f32 against f64");
}

TEST_CASE("PyTorch's reference values (tests/reference/*.json), f64 and f32") {
  int refs = 0;
  for (const OpInfo& op : op_table())
    for (const Sample& s : op.samples)
      if (s.ref.defined()) {
        for (const std::string& e : ref_errors(op, s)) FAIL_CHECK(e);
        ++refs;
      }
  MESSAGE(refs << " samples with PyTorch's values");
}

TEST_CASE("the bench cases (`betctl bench ops` rows) run, forward and backward") {
  int n = 0;
  for (const OpInfo& op : op_table())
    for (const BenchCase& b : op.bench) {
      CAPTURE(op.name);
      CAPTURE(b.label);
      CHECK((b.cost.gemm ? b.cost.M * b.cost.N * b.cost.K > 0 : b.cost.bytes > 0));
      Inputs in = b.make();
      for (size_t i = 0; i < in.size(); ++i)
        if (is_floating(in[i].dtype()) && !op.is_nondiff(i)) in[i].set_requires_grad();
      Tensor out = run_bench(op, b, in);
      REQUIRE(out.defined());
      if (op.differentiable) sum(out).backward();
      ++n;
    }
  CHECK(n >= 15);
}
