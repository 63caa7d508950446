// betctl diagnose (issue 13): the SVG/HTML report code, the property checks on their
// negative controls, and the whole command at --quick size.
//
// Every property gets a result that passes it and a control that must be flagged:
// exact Bayes against a future leak (bernoulli), exact Bayes against a recency chaser
// (martingale, dispersion), independent orderings against K identical copies
// (permutations), a one-layer pe=none model against the same model with rope
// (pe-ablation), a trained classifier against one that ignores its input (calibration),
// sqrt(n) growth against a clamped length (cot). The end-to-end case runs
// `betctl diagnose all --quick`, checks each experiment passes, parses report.html with
// libxml2's HTML parser and counts the data points of every plot.
#include <doctest/doctest.h>
#include <libxml/HTMLparser.h>
#include <libxml/tree.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "betctl_driver.h"
#include "platform/threads.h"
#include "runtime/diagnose/fit.h"
#include "runtime/diagnose/runner.h"
#include "runtime/report/html_report.h"
#include "runtime/report/svg_plot.h"

using namespace bet;
using namespace bet::diagnose;

namespace {

using bet::test::read_text;

// Parses an HTML page with libxml2, collecting every error it reports.
struct ParsedHtml {
  htmlDocPtr doc = nullptr;
  std::vector<std::string> errors;
  ~ParsedHtml() {
    if (doc) xmlFreeDoc(doc);
  }
};

// libxml2's HTML parser knows HTML 4 only: it reports inline SVG elements and the HTML5
// sectioning elements the report uses as unknown tags. Those are the only reports let
// through; every other error (unclosed or misnested tags, bad attributes, bad
// entities) fails the test.
const std::set<std::string> kNewerTags = {"svg",    "g",        "rect",    "line", "text",
                                          "circle", "polyline", "section", "nav",  "figure"};

void collect_error(void* ctx, xmlErrorPtr e) {
  auto* errors = static_cast<std::vector<std::string>*>(ctx);
  if (e->code == XML_HTML_UNKNOWN_TAG && e->str1 && kNewerTags.count(e->str1)) return;
  errors->push_back("line " + std::to_string(e->line) + ": " + (e->message ? e->message : "?"));
}

std::unique_ptr<ParsedHtml> parse_html(const std::string& html) {
  auto p = std::make_unique<ParsedHtml>();
  // The structured error handler (global in libxml2 2.9, which Debian 12 ships).
  xmlSetStructuredErrorFunc(&p->errors, reinterpret_cast<xmlStructuredErrorFunc>(collect_error));
  p->doc =
      htmlReadMemory(html.data(), int(html.size()), "report.html", "utf-8", HTML_PARSE_NONET | HTML_PARSE_PEDANTIC);
  xmlSetStructuredErrorFunc(nullptr, nullptr);
  return p;
}

void find_elements(xmlNodePtr node, const char* name, std::vector<xmlNodePtr>* out) {
  for (xmlNodePtr n = node; n; n = n->next) {
    if (n->type == XML_ELEMENT_NODE && xmlStrcasecmp(n->name, BAD_CAST name) == 0) out->push_back(n);
    find_elements(n->children, name, out);
  }
}

std::string attribute(xmlNodePtr n, const char* name) {
  xmlChar* v = xmlGetProp(n, BAD_CAST name);
  std::string s = v ? reinterpret_cast<const char*>(v) : "";
  xmlFree(v);
  return s;
}

// Data points of one <svg>: its <circle class="pt"> elements.
int data_points(xmlNodePtr svg) {
  std::vector<xmlNodePtr> circles;
  find_elements(svg->children, "circle", &circles);
  int n = 0;
  for (xmlNodePtr c : circles) n += attribute(c, "class") == "pt";
  return n;
}

// A small causal model trained briefly on the Bernoulli task. (A fresh one will not do
// for the order tests: its near-uniform attention hardly reads positions, so even rope
// leaves the prediction within a few round-offs of invariant.)
std::shared_ptr<model::BetModel> trained_lm(model::LayerKind layer, model::PosEncoding pe, int64_t layers) {
  ModelSpec s;
  s.layer = layer;
  s.pe = pe;
  s.layers = layers;
  s.d_model = 16;
  s.seq_len = 24;
  s.steps = 60;
  s.warmup = 10;
  return train_model(s, nullptr);
}

}  // namespace

TEST_CASE("svg plot: ticks, log axes and one marker per drawable point") {
  const auto lin = report::linear_ticks(0, 1);
  REQUIRE(lin.size() >= 4);
  CHECK(lin.front() == doctest::Approx(0));
  CHECK(lin.back() == doctest::Approx(1));
  const auto lg = report::log_ticks(1, 1000);
  CHECK(lg == std::vector<double>{1, 10, 100, 1000});
  CHECK(report::log_ticks(2, 40).size() >= 4);  // fewer than three decades: 1-2-5 steps
  CHECK(report::tick_label(1e-6) == "1e-06");
  CHECK(report::tick_label(0.25) == "0.25");

  report::Plot p = report::make_plot("t <&>", "x", "y", true, true);
  report::Series s;
  s.name = "data";
  s.x = {1, 2, 4, 8, -1, 16};
  s.y = {1, 0.5, 0.25, 0.125, 1, 0};  // (-1, 1) and (16, 0) cannot go on log axes
  p.series.push_back(s);
  const std::string svg = report::render_svg(p);
  CHECK(svg.find("data-points=\"4\"") != std::string::npos);
  CHECK(svg.find("data-skipped=\"2\"") != std::string::npos);
  CHECK(svg.find("t &lt;&amp;&gt;") != std::string::npos);
  size_t circles = 0;
  for (size_t at = svg.find("class=\"pt\""); at != std::string::npos; at = svg.find("class=\"pt\"", at + 1)) ++circles;
  CHECK(circles == 4);
  CHECK(svg.find("(log scale)") != std::string::npos);
}

TEST_CASE("fits: a power law's exponent and the scale of log n / n") {
  std::vector<double> x, y, f;
  for (double k = 1; k <= 64; k *= 2) {
    x.push_back(k);
    y.push_back(3 / std::sqrt(k));
    f.push_back(log_n_over_n(k + 1));
  }
  CHECK(fit_loglog(x, y).slope == doctest::Approx(-0.5));
  std::vector<double> scaled;
  for (double v : f) scaled.push_back(0.7 * v);
  CHECK(fit_scale_log(f, scaled) == doctest::Approx(0.7));
  CHECK(log_grid(1, 31, 8).front() == 1);
  CHECK(log_grid(1, 31, 8).back() == 31);
}

TEST_CASE("bernoulli: exact Bayes meets the floor, a future leak beats it and is flagged") {
  const ExperimentResult bayes = bernoulli_experiment(ExactBayesPredictor(), 128, 32, 5, true);
  CHECK(bayes.verdict.passed());
  CHECK(bayes.data["mean_excess"].get<double>() == doctest::Approx(0).epsilon(1e-12));
  const ExperimentResult leak = bernoulli_experiment(FutureLeakPredictor(), 128, 32, 5, true);
  CHECK_FALSE(leak.verdict.passed());
  CHECK(leak.data["mean_excess"].get<double>() < -0.05);
  CHECK(leak.data["efficiency"].get<double>() > 1.05);
}

TEST_CASE("martingale: exact Bayes has no gap, a recency chaser is flagged") {
  const std::vector<int> grid = log_grid(1, 30, 8);
  const ExperimentResult bayes = martingale_experiment(ExactBayesPredictor(), 64, grid, 7);
  CHECK(bayes.verdict.passed());
  for (double g : bayes.data["mean_abs_gap"]) CHECK(g < 1e-12);
  const ExperimentResult rec = martingale_experiment(RecencyPredictor(), 64, grid, 7);
  CHECK_FALSE(rec.verdict.passed());
}

TEST_CASE("dispersion: exact Bayes is order-free, a recency chaser does not decay") {
  const std::vector<int> grid = log_grid(2, 32, 6);
  const ExperimentResult bayes = dispersion_experiment(ExactBayesPredictor(), 8, 16, grid, 9);
  CHECK(bayes.verdict.passed());
  for (double d : bayes.data["dispersion"]) CHECK(d < 1e-12);
  CHECK_FALSE(dispersion_experiment(RecencyPredictor(), 8, 16, grid, 9).verdict.passed());
  // A spread that falls like log n / n passes; a flat one does not.
  std::vector<double> n, decaying, flat;
  for (int v : grid) {
    n.push_back(v);
    decaying.push_back(0.03 * log_n_over_n(v));
    flat.push_back(0.01);
  }
  CHECK(check_dispersion(n, decaying).passed());
  CHECK_FALSE(check_dispersion(n, flat).passed());
}

TEST_CASE("permutations: independent orderings give slope -1/2, identical copies give 0 and are flagged") {
  // The recency chaser depends on the order (on which outcome is last), so averaging
  // over orderings has a spread to remove.
  const ExperimentResult indep = permutations_experiment(RecencyPredictor(), 4, 16, 96, 64, 11, false);
  CHECK(indep.verdict.passed());
  CHECK(indep.data["loglog_slope"].get<double>() == doctest::Approx(-0.5).epsilon(0.3));
  const ExperimentResult copies = permutations_experiment(RecencyPredictor(), 4, 16, 96, 64, 11, true);
  CHECK_FALSE(copies.verdict.passed());
  CHECK(std::fabs(copies.data["loglog_slope"].get<double>()) < 1e-9);
  // An order-invariant predictor has nothing to average: flagged, not passed.
  CHECK_FALSE(permutations_experiment(ExactBayesPredictor(), 2, 16, 8, 8, 11).verdict.passed());
}

TEST_CASE("pe-ablation: one-layer pe=none is order-invariant to round-off, the same model with rope is not") {
  using model::LayerKind;
  using model::PosEncoding;
  ModelOutcomePredictor none(trained_lm(LayerKind::Standard, PosEncoding::None, 1), "none");
  ModelOutcomePredictor rope(trained_lm(LayerKind::Standard, PosEncoding::Rope, 1), "rope");
  // A bet layer with the branches that read earlier positions' prefix-dependent states
  // zeroed (stats projection -> attention keys; CoT gate -> mean of post-attention
  // states) is invariant too: the explanation pe-ablation reports for its bet rows.
  auto bet_model = trained_lm(LayerKind::Bet, PosEncoding::None, 1);
  bet_model->bet_layers[0]->stats->proj->weight.fill_(0.0);
  bet_model->bet_layers[0]->stats->proj->bias.fill_(0.0);
  bet_model->bet_layers[0]->cot_gate->weight.fill_(0.0);
  bet_model->bet_layers[0]->cot_gate->bias.fill_(0.0);
  ModelOutcomePredictor bet_zeroed(bet_model, "bet zeroed");
  const ExperimentResult r = pe_ablation_experiment(
      {{"standard", "none", 1, &none}, {"standard", "rope", 1, &rope}, {"bet zeroed", "none", 1, &bet_zeroed}}, 6, 12,
      24, 13);
  CHECK(r.verdict.passed());
  const auto& rows = r.data["models"];
  MESSAGE("order variance (x_n in place): standard none ", rows[0]["variance_last_fixed"].get<double>(),
          ", standard rope ", rows[1]["variance_last_fixed"].get<double>(), ", bet zeroed ",
          rows[2]["variance_last_fixed"].get<double>());
  CHECK(rows[0]["variance_last_fixed"].get<double>() <= kRoundOffVariance);
  CHECK(rows[1]["variance_last_fixed"].get<double>() > 100 * kRoundOffVariance);
  CHECK(rows[2]["variance_last_fixed"].get<double>() <= kRoundOffVariance);
  // Over all orderings the token the prediction is read at moves too: not invariant.
  CHECK(rows[0]["variance_all"].get<double>() > 100 * kRoundOffVariance);
  // The check itself: swap the roles and it flags both.
  CHECK(check_pe_ablation({{"standard", "none", 1, 1e-6, 1e-6}, {"standard", "rope", 1, 0, 0}}).flags.size() == 2);
}

TEST_CASE("calibration: a model that ignores its input ranks errors at chance and is flagged") {
  CalibrationInput in;
  in.source = "constant";
  in.label_names = {"low", "high"};
  const auto ex = classification_examples(400, 16, 3);
  for (const auto& e : ex) {
    in.probs.push_back({0.4, 0.6});  // the same answer whatever the input
    in.labels.push_back(e.label);
  }
  const ExperimentResult blind = calibration_experiment(in, true);
  CHECK_FALSE(blind.verdict.passed());
  CHECK(blind.data["metrics"]["error_auroc"].get<double>() == doctest::Approx(0.5));
  // Exact Bayes on the same examples ranks its errors and is calibrated.
  CalibrationInput bayes = in;
  bayes.probs.clear();
  for (const auto& e : ex) {
    const double p = bayes_prob_high(e.outcomes);
    bayes.probs.push_back({1 - p, p});
  }
  const ExperimentResult ok = calibration_experiment(bayes, true);
  CHECK(ok.verdict.passed());
  CHECK(ok.data["metrics"]["error_auroc"].get<double>() > 0.7);
}

TEST_CASE("cot: sqrt(n) growth passes, a length stuck at its clamp is flagged") {
  std::vector<double> n, grows, clamped;
  for (int v = 1; v <= 32; ++v) {
    n.push_back(v);
    grows.push_back(20 * std::sqrt(double(v)));
    clamped.push_back(512);
  }
  CHECK(check_cot(n, grows, 512).passed());
  CHECK_FALSE(check_cot(n, clamped, 512).passed());
  std::vector<double> linear;
  for (double v : n) linear.push_back(3 * v);
  CHECK_FALSE(check_cot(n, linear, 512).passed());
}

TEST_CASE("report: valid HTML whose every plot has data points") {
  ExperimentResult r = bernoulli_experiment(ExactBayesPredictor(), 16, 24, 1, true);
  const std::string html = render_report({r, permutations_experiment(RecencyPredictor(), 2, 8, 16, 16, 2)}, "test");
  auto parsed = parse_html(html);
  REQUIRE(parsed->doc != nullptr);
  for (const auto& e : parsed->errors) MESSAGE("libxml2: ", e);
  CHECK(parsed->errors.empty());
  std::vector<xmlNodePtr> svgs;
  find_elements(xmlDocGetRootElement(parsed->doc), "svg", &svgs);
  CHECK(svgs.size() == 3);
  for (xmlNodePtr s : svgs) CHECK(data_points(s) > 0);
}

namespace {
test::ScratchDir g_scratch("bet_diagnose");
}  // namespace

TEST_CASE("betctl diagnose: usage errors exit 2 and name the flag") {
  REQUIRE_MESSAGE(!test::g_betctl.empty(), "run with the betctl binary as the first argument");
  const std::string err = (g_scratch.path() / "usage.err").string();
  CHECK(test::run_process({test::g_betctl, "diagnose", "no-such", "--out", g_scratch.path().string()}, "", err) == 2);
  CHECK(read_text(err).find("NAME") != std::string::npos);
  CHECK(test::run_process({test::g_betctl, "diagnose", "cot"}, "", err) == 2);
  CHECK(read_text(err).find("--out") != std::string::npos);
  CHECK(test::run_process(
            {test::g_betctl, "diagnose", "calibration", "--out", g_scratch.path().string(), "--data", "x.jsonl"}, "",
            err) == 2);
  CHECK(read_text(err).find("--data") != std::string::npos);
  CHECK(test::run_process({test::g_betctl, "diagnose", "cot", "--out", g_scratch.path().string(), "--threads", "-1"},
                          "", err) == 2);
  CHECK(read_text(err).find("--threads") != std::string::npos);
}

TEST_CASE("betctl diagnose all --quick: every experiment's files, its property, and a report that parses") {
  REQUIRE_MESSAGE(!test::g_betctl.empty(), "run with the betctl binary as the first argument");
  const std::string out = (g_scratch.path() / "quick").string();
  const std::string err = (g_scratch.path() / "quick.err").string();
  const auto t0 = std::chrono::steady_clock::now();
  const int rc = test::run_process({test::g_betctl, "diagnose", "all", "--quick", "--threads", "1", "--out", out},
                                   (g_scratch.path() / "quick.out").string(), err, std::chrono::seconds(300));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  MESSAGE("diagnose all --quick: ", seconds, " s");
  REQUIRE_MESSAGE(rc == 0, read_text(err));
  CHECK(read_text(err).find("[diagnose]") != std::string::npos);  // progress on stderr

  for (const std::string& name : experiment_names()) {
    CAPTURE(name);
    const std::string json_path = out + "/" + name + ".json";
    REQUIRE(std::filesystem::exists(json_path));
    const auto j = nlohmann::json::parse(read_text(json_path));
    const std::string csv = read_text(out + "/" + name + ".csv");
    CHECK(std::count(csv.begin(), csv.end(), '\n') >= 2);  // a header and data
    for (const auto& f : j["flags"]) MESSAGE(name, " flag: ", f.get<std::string>());
    // dispersion reports what the quick model does; its property (a decay like log n / n)
    // is measured, and checked on references and controls above.
    if (name != "dispersion") CHECK_MESSAGE(j["passed"].get<bool>(), name, " did not pass its property");
  }
  const auto summary = nlohmann::json::parse(read_text(out + "/summary.json"));
  CHECK(summary["experiments"].size() == experiment_names().size());
  // The report of all seven: valid HTML, every plot with data points.
  auto parsed = parse_html(read_text(out + "/report.html"));
  REQUIRE(parsed->doc != nullptr);
  for (const auto& e : parsed->errors) MESSAGE("libxml2: ", e);
  CHECK(parsed->errors.empty());
  std::vector<xmlNodePtr> svgs;
  find_elements(xmlDocGetRootElement(parsed->doc), "svg", &svgs);
  CHECK(svgs.size() >= experiment_names().size());  // at least a plot per experiment
  for (xmlNodePtr s : svgs) CHECK(data_points(s) > 0);

  // The models are cached: a second run of one experiment trains nothing.
  CHECK(std::filesystem::exists(out + "/models"));
  const std::string err2 = (g_scratch.path() / "again.err").string();
  CHECK(test::run_process({test::g_betctl, "diagnose", "cot", "--quick", "--threads", "1", "--out", out}, "", err2) ==
        0);
  CHECK(read_text(err2).find("training") == std::string::npos);
  CHECK(read_text(err2).find("reusing") != std::string::npos);
}

int main(int argc, char** argv) {
  bet::platform::set_num_threads(1);  // the in-process trainings: small GEMMs, a shared machine
  return bet::test::run_with_betctl_arg(argc, argv);
}
