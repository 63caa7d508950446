#include "runtime/server/http_response.h"

#include <charconv>
#include <nlohmann/json.hpp>

namespace bet::server {

std::string_view status_reason(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    // 501 is the status RFC 9112 gives a request whose Transfer-Encoding the server
    // does not support (http_parser.cpp answers it so); the phrase is the RFC's own.
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
}

std::string_view error_code_for(int status) {
  switch (status) {
    case 400: return "bad_request";
    case 401: return "unauthorized";
    case 404: return "not_found";
    case 405: return "method_not_allowed";
    case 408: return "request_timeout";
    case 413: return "payload_too_large";
    case 415: return "unsupported_media_type";
    case 422: return "unprocessable_entity";
    case 429: return "rate_limited";
    case 431: return "headers_too_large";
    case 500: return "internal_error";
    case 501: return "not_implemented";
    case 503: return "unavailable";
    case 505: return "http_version_not_supported";
    default: return "error";
  }
}

std::string_view HttpDate::now() {
  std::time_t t = std::time(nullptr);
  if (t != last_) {
    std::tm tm{};
    gmtime_r(&t, &tm);
    len_ = std::strftime(text_, sizeof text_, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    last_ = t;
  }
  return {text_, len_};
}

void write_response(Buffer& out, const ResponseHead& head, std::string_view body) {
  char num[24];
  // A server answers with the highest HTTP/1.x it speaks, whatever minor the client sent.
  out.append("HTTP/1.1 ");
  auto r = std::to_chars(num, num + sizeof num, head.status);
  out.append(num, static_cast<size_t>(r.ptr - num));
  out.push_back(' ');
  out.append(status_reason(head.status));
  out.append("\r\nServer: betctl\r\n");
  if (!head.date.empty()) {
    out.append("Date: ");
    out.append(head.date);
    out.append("\r\n");
  }
  if (!body.empty() || !head.content_type.empty()) {
    out.append("Content-Type: ");
    out.append(head.content_type);
    out.append("\r\n");
  }
  out.append("Content-Length: ");
  r = std::to_chars(num, num + sizeof num, body.size());
  out.append(num, static_cast<size_t>(r.ptr - num));
  out.append("\r\n");
  if (!head.keep_alive) out.append("Connection: close\r\n");
  else if (head.http10) out.append("Connection: keep-alive\r\n");
  out.append(head.extra_headers);
  out.append("\r\n");
  if (!head.head_only) out.append(body);
}

std::string error_json(std::string_view code, std::string_view message) {
  nlohmann::json j;
  j["error"]["code"] = code;
  j["error"]["message"] = message;
  // Replace invalid UTF-8 (a message may quote client input) rather than throw.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace bet::server
