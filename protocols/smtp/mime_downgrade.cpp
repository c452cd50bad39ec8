#include "protocols/smtp/mime_downgrade.h"

#include <algorithm>

#include "protocols/smtp/ascii.h"

namespace ringmail::smtp {

namespace {

// Deeper nesting is sent as it is (a message that nests this deep is not
// mail a person wrote; the walk must stay bounded).
constexpr unsigned max_depth = 32;
constexpr std::string_view crlf = "\r\n";

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

std::string_view trim(std::string_view s) {
    while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
    while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
    return s;
}

// The first token of a header value: "8bit (comment)", "(c) 8bit" and
// "\"8bit\"" -> "8bit" (RFC 822 comments may stand anywhere).
std::string_view first_token(std::string_view value) {
    value = trim(value);
    while (!value.empty() && value.front() == '(') {
        size_t depth = 0, i = 0;
        for (; i < value.size(); ++i) {
            if (value[i] == '(') ++depth;
            else if (value[i] == ')' && --depth == 0) break;
        }
        value = trim(value.substr(std::min(i + 1, value.size())));
    }
    if (!value.empty() && value.front() == '"') {
        size_t close = value.find('"', 1);
        return value.substr(1, close == std::string_view::npos ? std::string_view::npos : close - 1);
    }
    size_t end = 0;
    while (end < value.size() && !is_space(value[end]) && value[end] != ';' && value[end] != '(') ++end;
    return value.substr(0, end);
}

int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

// The boundary parameter of a Content-Type value ("" if none): a token, a
// quoted-string (backslash escapes undone), or RFC 2231's boundary*=
// charset'lang'%-encoded value.
std::string boundary_of(std::string_view value) {
    size_t semi = value.find(';');
    while (semi != std::string_view::npos) {
        std::string_view rest = value.substr(semi + 1);
        size_t eq = rest.find('=');
        if (eq == std::string_view::npos) return {};
        std::string_view name = trim(rest.substr(0, eq));
        std::string_view v = trim(rest.substr(eq + 1));
        size_t consumed = 0;
        std::string param;
        if (!v.empty() && v.front() == '"') {
            size_t i = 1;
            for (; i < v.size() && v[i] != '"'; ++i) {
                if (v[i] == '\\' && i + 1 < v.size()) ++i;
                param.push_back(v[i]);
            }
            if (i >= v.size()) return {};  // unterminated
            consumed = i + 1;
        } else {
            while (consumed < v.size() && v[consumed] != ';' && !is_space(v[consumed])) ++consumed;
            param.assign(v.substr(0, consumed));
        }
        if (iequals(name, "boundary")) return param;
        if (iequals(name, "boundary*")) {
            // charset'language'value, the value %-encoded (RFC 2231 §4)
            size_t q1 = param.find('\''), q2 = q1 == std::string::npos ? q1 : param.find('\'', q1 + 1);
            if (q2 == std::string::npos) return {};
            std::string decoded;
            for (size_t i = q2 + 1; i < param.size(); ++i) {
                int hi, lo;
                if (param[i] == '%' && i + 2 < param.size() && (hi = hex_digit(param[i + 1])) >= 0 &&
                    (lo = hex_digit(param[i + 2])) >= 0) {
                    decoded.push_back(static_cast<char>(hi * 16 + lo));
                    i += 2;
                } else {
                    decoded.push_back(param[i]);
                }
            }
            return decoded;
        }
        size_t next = v.substr(consumed).find(';');
        if (next == std::string_view::npos) return {};
        value = v.substr(consumed + next);
        semi = 0;
    }
    return {};
}

struct entity {
    std::string_view headers;  // the header fields, each with its CRLF
    std::string_view body;     // after the empty line
    bool separated = false;    // there was an empty line
    std::string_view content_type;
    std::string_view encoding;
    size_t encoding_begin = std::string_view::npos, encoding_end = 0;  // the CTE field in `headers`
};

entity parse_entity(std::string_view e) {
    entity out;
    if (e.starts_with(crlf)) {
        out.body = e.substr(2);
        out.separated = true;
    } else if (size_t end = e.find("\r\n\r\n"); end != std::string_view::npos) {
        out.headers = e.substr(0, end + 2);
        out.body = e.substr(end + 4);
        out.separated = true;
    } else {
        out.headers = e;
    }
    // Fields: a line not starting with white space, and its continuation lines.
    size_t pos = 0;
    const std::string_view h = out.headers;
    while (pos < h.size()) {
        size_t end = pos;
        do {
            size_t eol = h.find(crlf, end);
            end = eol == std::string_view::npos ? h.size() : eol + 2;
        } while (end < h.size() && (h[end] == ' ' || h[end] == '\t'));
        std::string_view field = h.substr(pos, end - pos);
        size_t colon = field.find(':');
        if (colon != std::string_view::npos) {
            std::string_view name = trim(field.substr(0, colon));
            std::string_view value = field.substr(colon + 1);
            if (iequals(name, "Content-Type") && out.content_type.empty()) {
                out.content_type = value;
            } else if (iequals(name, "Content-Transfer-Encoding") && out.encoding_begin == std::string_view::npos) {
                out.encoding = first_token(value);
                out.encoding_begin = pos;
                out.encoding_end = end;
            }
        }
        pos = end;
    }
    return out;
}

bool declared_8bit(const entity& e) { return iequals(e.encoding, "8bit") || iequals(e.encoding, "binary"); }

struct walk {
    std::string_view unconvertible;  // why a part cannot be made 7-bit (the first one)
};

// `digest`: a part of a multipart/digest (its default type is message/rfc822).
bool convert_entity(std::string_view e, std::string& out, unsigned depth, walk& w, bool digest = false);

// Appends the multipart body with each part converted; true when one was.
bool convert_multipart(std::string_view body, std::string_view boundary, bool digest, std::string& out, unsigned depth,
                       walk& w) {
    std::string delimiter = "--";
    delimiter.append(boundary);
    bool changed = false;
    size_t copied = 0;                            // body[0, copied) is in out
    size_t part_begin = std::string_view::npos;   // content of the open part
    size_t pos = 0;
    while (pos < body.size()) {
        size_t eol = body.find(crlf, pos);
        size_t line_end = eol == std::string_view::npos ? body.size() : eol;
        std::string_view line = body.substr(pos, line_end - pos);
        bool closing = false, is_delimiter = false;
        if (line.starts_with(delimiter)) {
            std::string_view rest = line.substr(delimiter.size());
            closing = rest.starts_with("--");
            if (closing) rest.remove_prefix(2);
            is_delimiter = trim(rest).empty();
        }
        if (is_delimiter) {
            // The CRLF before a delimiter belongs to it (RFC 2046 §5.1.1).
            size_t content_end = pos >= 2 ? pos - 2 : 0;
            if (part_begin != std::string_view::npos && content_end > part_begin) {
                out.append(body.substr(copied, part_begin - copied));
                changed |= convert_entity(body.substr(part_begin, content_end - part_begin), out, depth + 1, w, digest);
                copied = content_end;
            }
            part_begin = closing ? std::string_view::npos : (eol == std::string_view::npos ? body.size() : eol + 2);
            if (closing) break;
        }
        pos = eol == std::string_view::npos ? body.size() : eol + 2;
    }
    if (part_begin != std::string_view::npos && part_begin < body.size()) {  // no closing delimiter
        out.append(body.substr(copied, part_begin - copied));
        changed |= convert_entity(body.substr(part_begin), out, depth + 1, w, digest);
        copied = body.size();
    }
    out.append(body.substr(copied));
    return changed;
}

// Appends `e` converted; true when something in it was.
bool convert_entity(std::string_view e, std::string& out, unsigned depth, walk& w, bool digest) {
    if (!has_8bit_octets(e)) {
        out.append(e);
        return false;
    }
    if (depth > max_depth) {
        if (w.unconvertible.empty()) w.unconvertible = "MIME nesting too deep to convert 8-bit content to 7 bit";
        out.append(e);
        return false;
    }
    entity parsed = parse_entity(e);
    std::string_view type = first_token(parsed.content_type);
    if (type.empty() && digest) type = "message/rfc822";
    size_t slash = type.find('/');
    std::string_view major = type.substr(0, slash);
    std::string body;
    std::string_view new_encoding;
    if (slash != std::string_view::npos && iequals(major, "multipart")) {
        std::string boundary = boundary_of(parsed.content_type);
        bool is_digest = iequals(type.substr(slash + 1), "digest");
        if (boundary.empty() || !convert_multipart(parsed.body, boundary, is_digest, body, depth, w)) {
            out.append(e);
            return false;
        }
        // 7bit only when true: a preamble may still hold 8-bit octets.
        if (declared_8bit(parsed) && !has_8bit_octets(body)) new_encoding = "7bit";
    } else if (iequals(type, "message/partial")) {
        // Always 7bit (RFC 2046 §5.2.2): a fragment cannot be re-encoded.
        if (has_8bit_octets(parsed.body) && w.unconvertible.empty())
            w.unconvertible = "8-bit message/partial cannot be converted to 7 bit";
        out.append(e);
        return false;
    } else if (iequals(type, "message/rfc822")) {
        if (!convert_entity(parsed.body, body, depth + 1, w)) {
            out.append(e);
            return false;
        }
        if (declared_8bit(parsed) && !has_8bit_octets(body)) new_encoding = "7bit";
    } else if (declared_8bit(parsed) && has_8bit_octets(parsed.body)) {
        // Text keeps its lines; other types have no lines to keep (§6.7 (4)).
        bool text = type.empty() || iequals(major, "text");
        append_quoted_printable(parsed.body, body, text);
        new_encoding = "quoted-printable";
    } else {
        out.append(e);
        return false;
    }
    if (new_encoding.empty()) {
        out.append(parsed.headers);
    } else {
        out.append(parsed.headers.substr(0, parsed.encoding_begin));
        out.append("Content-Transfer-Encoding: ");
        out.append(new_encoding);
        out.append(crlf);
        out.append(parsed.headers.substr(parsed.encoding_end));
    }
    if (parsed.separated) out.append(crlf);
    out.append(body);
    return true;
}

void append_encoded_line(std::string_view line, std::string& out) {
    static constexpr char hex[] = "0123456789ABCDEF";
    size_t col = 0;
    for (size_t i = 0; i < line.size(); ++i) {
        unsigned char c = static_cast<unsigned char>(line[i]);
        bool last = i + 1 == line.size();
        bool literal = (c >= 33 && c <= 126 && c != '=') || ((c == ' ' || c == '\t') && !last);
        size_t width = literal ? 1 : 3;
        // 76 characters a line at most, the '=' of a soft break included.
        if (col + width > (last ? 76 : 75)) {
            out.append("=\r\n");
            col = 0;
        }
        // A line starting "--" could read as a MIME boundary (also one with
        // "=3D" where the original had "=").
        if (col == 0 && c == '-') {
            literal = false;
            width = 3;
        }
        if (literal) {
            out.push_back(static_cast<char>(c));
        } else {
            out.push_back('=');
            out.push_back(hex[c >> 4]);
            out.push_back(hex[c & 15]);
        }
        col += width;
    }
}

}  // namespace

void append_quoted_printable(std::string_view text, std::string& out, bool line_breaks) {
    if (!line_breaks) {
        append_encoded_line(text, out);
        return;
    }
    size_t pos = 0;
    while (pos < text.size()) {
        size_t eol = text.find(crlf, pos);
        if (eol == std::string_view::npos) {
            append_encoded_line(text.substr(pos), out);
            return;
        }
        append_encoded_line(text.substr(pos, eol - pos), out);
        out.append(crlf);
        pos = eol + 2;
    }
}

downgrade_result downgrade_8bit_mime(std::string_view message) {
    downgrade_result r;
    if (!has_8bit_octets(message)) return r;
    r.message.reserve(message.size() + message.size() / 4);
    walk w;
    bool changed = convert_entity(message, r.message, 0, w);
    if (!w.unconvertible.empty()) {
        r.outcome = downgrade_result::status::unconvertible;
        r.why = w.unconvertible;
    }
    else if (changed) r.outcome = downgrade_result::status::converted;
    if (r.outcome != downgrade_result::status::converted) r.message.clear();
    return r;
}

}  // namespace ringmail::smtp
