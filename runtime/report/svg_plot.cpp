#include "runtime/report/svg_plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace bet::report {

namespace {

// Colour-blind-safe palette (Okabe-Ito), in the order series take them.
const char* const kPalette[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"};
constexpr int kPaletteSize = 7;

// Plot-area margins: room for tick labels on the left and bottom, the title on top.
constexpr int kLeft = 72, kRight = 16, kTop = 34, kBottom = 50;

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

bool drawable(double x, double y, bool log_x, bool log_y) {
  if (!std::isfinite(x) || !std::isfinite(y)) return false;
  if (log_x && x <= 0) return false;
  if (log_y && y <= 0) return false;
  return true;
}

struct Axis {
  bool log = false;
  double lo = 0, hi = 1;  // in data units (log axes: positive)
  double pixel_lo = 0, pixel_hi = 1;
  double map(double v) const {
    const double a = log ? std::log10(lo) : lo, b = log ? std::log10(hi) : hi;
    const double t = ((log ? std::log10(v) : v) - a) / (b - a);
    return pixel_lo + t * (pixel_hi - pixel_lo);
  }
};

// The data range of one axis, padded so points do not sit on the frame. A log axis is
// widened to whole decades when it spans several (so its ticks reach the corners), and
// a degenerate range gets a width of its own.
void fit_range(std::vector<double> v, bool log, double* lo, double* hi) {
  if (v.empty()) {
    *lo = log ? 1 : 0;
    *hi = log ? 10 : 1;
    return;
  }
  double a = *std::min_element(v.begin(), v.end()), b = *std::max_element(v.begin(), v.end());
  if (log) {
    double la = std::log10(a), lb = std::log10(b);
    if (lb - la < 1e-9) {
      la -= 0.5;
      lb += 0.5;
    }
    const double pad = 0.05 * (lb - la);
    *lo = std::pow(10.0, la - pad);
    *hi = std::pow(10.0, lb + pad);
    return;
  }
  if (b - a < 1e-12 * std::max(1.0, std::fabs(a))) {
    const double w = a == 0 ? 1 : std::fabs(a) * 0.5;
    a -= w;
    b += w;
  }
  const double pad = 0.05 * (b - a);
  *lo = a - pad;
  *hi = b + pad;
}

}  // namespace

std::string xml_escape(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

Plot make_plot(std::string title, std::string x_label, std::string y_label, bool log_x, bool log_y) {
  Plot p;
  p.title = std::move(title);
  p.x_label = std::move(x_label);
  p.y_label = std::move(y_label);
  p.log_x = log_x;
  p.log_y = log_y;
  return p;
}

std::vector<double> linear_ticks(double lo, double hi, int target) {
  std::vector<double> ticks;
  if (!(hi > lo) || !std::isfinite(lo) || !std::isfinite(hi)) return ticks;
  const double raw = (hi - lo) / std::max(1, target);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  for (double t = std::ceil(lo / step) * step; t <= hi + step * 1e-9; t += step)
    ticks.push_back(std::fabs(t) < step * 1e-9 ? 0.0 : t);  // no "-0" or 1e-17 at zero
  return ticks;
}

std::vector<double> log_ticks(double lo, double hi) {
  std::vector<double> ticks;
  if (!(hi > lo) || lo <= 0) return ticks;
  const int a = int(std::floor(std::log10(lo))), b = int(std::ceil(std::log10(hi)));
  // Few decades: 1, 2, 5 in each, so a short axis still has several labels. Many
  // decades: every decade, thinned to at most about eight labels.
  const bool fine = b - a < 3;
  const int every = std::max(1, (b - a + 7) / 8);
  auto collect = [&](const std::vector<double>& multiples) {
    ticks.clear();
    for (int e = a; e <= b; ++e)
      for (double m : multiples) {
        if (!fine && (m != 1.0 || (e - a) % every != 0)) continue;
        const double t = m * std::pow(10.0, e);
        if (t >= lo * (1 - 1e-9) && t <= hi * (1 + 1e-9)) ticks.push_back(t);
      }
  };
  collect({1, 2, 5});
  if (fine && ticks.size() < 3) collect({1, 2, 3, 4, 5, 6, 7, 8, 9});  // a narrow range: every multiple
  return ticks;
}

std::string tick_label(double v) {
  if (v == 0) return "0";
  char buf[32];
  const double a = std::fabs(v);
  if (a >= 1e-3 && a < 1e5)
    std::snprintf(buf, sizeof buf, "%.6g", v);
  else
    std::snprintf(buf, sizeof buf, "%.0e", v);
  return buf;
}

std::string render_svg(const Plot& plot) {
  std::vector<double> xs, ys;
  int skipped = 0, points = 0;
  for (const Series& s : plot.series)
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (drawable(s.x[i], s.y[i], plot.log_x, plot.log_y)) {
        xs.push_back(s.x[i]);
        ys.push_back(s.y[i]);
        ++points;
      } else {
        ++skipped;
      }
    }
  Axis ax, ay;
  ax.log = plot.log_x;
  ay.log = plot.log_y;
  fit_range(xs, ax.log, &ax.lo, &ax.hi);
  fit_range(ys, ay.log, &ay.lo, &ay.hi);
  // The legend sits below the x axis's title, one entry per row, so it never covers data.
  const int legend_rows = int(plot.series.size());
  const int W = plot.width, H = plot.height, total_h = H + (legend_rows ? 8 + 15 * legend_rows : 0);
  ax.pixel_lo = kLeft;
  ax.pixel_hi = W - kRight;
  ay.pixel_lo = H - kBottom;  // y grows upwards
  ay.pixel_hi = kTop;

  std::ostringstream o;
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"plot\" width=\"" << W << "\" height=\"" << total_h
    << "\" viewBox=\"0 0 " << W << ' ' << total_h << "\" data-points=\"" << points << "\" data-skipped=\"" << skipped
    << "\" font-family=\"sans-serif\" font-size=\"11\">\n";
  o << "<title>" << xml_escape(plot.title) << "</title>\n";
  o << "<rect x=\"0\" y=\"0\" width=\"" << W << "\" height=\"" << total_h << "\" fill=\"#fff\"/>\n";
  o << "<text x=\"" << W / 2 << "\" y=\"18\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"bold\">"
    << xml_escape(plot.title) << "</text>\n";

  // Grid, ticks and tick labels.
  std::vector<double> tx = ax.log ? log_ticks(ax.lo, ax.hi) : linear_ticks(ax.lo, ax.hi);
  if (!plot.x_ticks.empty()) {
    tx.clear();
    for (double t : plot.x_ticks)
      if (t >= ax.lo && t <= ax.hi) tx.push_back(t);
  }
  const std::vector<double> ty = ay.log ? log_ticks(ay.lo, ay.hi) : linear_ticks(ay.lo, ay.hi, 5);
  for (double t : tx) {
    const double px = ax.map(t);
    o << "<line x1=\"" << num(px) << "\" y1=\"" << kTop << "\" x2=\"" << num(px) << "\" y2=\"" << H - kBottom
      << "\" stroke=\"#e6e6e6\"/>";
    o << "<line x1=\"" << num(px) << "\" y1=\"" << H - kBottom << "\" x2=\"" << num(px) << "\" y2=\"" << H - kBottom + 5
      << "\" stroke=\"#333\"/>";
    o << "<text class=\"tick\" x=\"" << num(px) << "\" y=\"" << H - kBottom + 17 << "\" text-anchor=\"middle\">"
      << tick_label(t) << "</text>\n";
  }
  for (double t : ty) {
    const double py = ay.map(t);
    o << "<line x1=\"" << kLeft << "\" y1=\"" << num(py) << "\" x2=\"" << W - kRight << "\" y2=\"" << num(py)
      << "\" stroke=\"#e6e6e6\"/>";
    o << "<line x1=\"" << kLeft - 5 << "\" y1=\"" << num(py) << "\" x2=\"" << kLeft << "\" y2=\"" << num(py)
      << "\" stroke=\"#333\"/>";
    o << "<text class=\"tick\" x=\"" << kLeft - 8 << "\" y=\"" << num(py + 4) << "\" text-anchor=\"end\">"
      << tick_label(t) << "</text>\n";
  }
  o << "<rect x=\"" << kLeft << "\" y=\"" << kTop << "\" width=\"" << W - kLeft - kRight << "\" height=\""
    << H - kTop - kBottom << "\" fill=\"none\" stroke=\"#333\"/>\n";
  o << "<text class=\"axis-label\" x=\"" << (kLeft + W - kRight) / 2 << "\" y=\"" << H - 10
    << "\" text-anchor=\"middle\">" << xml_escape(plot.x_label) << (ax.log ? " (log scale)" : "") << "</text>\n";
  o << "<text class=\"axis-label\" transform=\"translate(14," << (kTop + H - kBottom) / 2
    << ") rotate(-90)\" text-anchor=\"middle\">" << xml_escape(plot.y_label) << (ay.log ? " (log scale)" : "")
    << "</text>\n";

  // The series. Axis ranges cover every drawable point, so nothing needs clipping (and
  // a page of several plots has no clip-path ids to keep unique).
  int palette = 0;
  std::vector<std::pair<const Series*, std::string>> legend;
  for (const Series& s : plot.series) {
    const std::string color = s.color.empty() ? kPalette[palette++ % kPaletteSize] : s.color;
    legend.emplace_back(&s, color);
    std::ostringstream pts;
    int drawn = 0;
    o << "<g class=\"series\" data-name=\"" << xml_escape(s.name) << "\">";
    for (size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (!drawable(s.x[i], s.y[i], plot.log_x, plot.log_y)) continue;
      const double px = ax.map(s.x[i]), py = ay.map(s.y[i]);
      pts << (drawn++ ? " " : "") << num(px) << ',' << num(py);
      if (s.markers)
        o << "<circle class=\"pt\" cx=\"" << num(px) << "\" cy=\"" << num(py) << "\" r=\"3\" fill=\"" << color
          << "\"><title>" << xml_escape(s.name) << ": (" << tick_label(s.x[i]) << ", " << s.y[i]
          << ")</title></circle>";
    }
    if (s.line && drawn > 1)
      o << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"1.8\""
        << (s.dashed ? " stroke-dasharray=\"6,4\"" : "") << " points=\"" << pts.str() << "\"/>";
    o << "</g>\n";
  }
  if (points == 0)
    o << "<text x=\"" << (kLeft + W - kRight) / 2 << "\" y=\"" << (kTop + H - kBottom) / 2
      << "\" text-anchor=\"middle\" fill=\"#999\">no data</text>\n";

  // Legend, below the plot.
  if (!legend.empty()) {
    int row = 0;
    o << "<g class=\"legend\">";
    for (auto& [ser, c] : legend) {
      const int yy = H + 8 + 15 * row++;
      o << "<line x1=\"" << kLeft << "\" y1=\"" << yy - 4 << "\" x2=\"" << kLeft + 24 << "\" y2=\"" << yy - 4
        << "\" stroke=\"" << c << "\" stroke-width=\"2\"" << (ser->dashed ? " stroke-dasharray=\"6,4\"" : "") << "/>";
      if (ser->markers)
        o << "<circle cx=\"" << kLeft + 12 << "\" cy=\"" << yy - 4 << "\" r=\"3\" fill=\"" << c << "\"/>";
      o << "<text x=\"" << kLeft + 32 << "\" y=\"" << yy << "\">" << xml_escape(ser->name) << "</text>";
    }
    o << "</g>\n";
  }
  o << "</svg>";
  return o.str();
}

}  // namespace bet::report
