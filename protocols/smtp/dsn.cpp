// dsn: RFC 3464 delivery status notifications (contract in dsn.h).
#include "protocols/smtp/dsn.h"

#include <algorithm>
#include <cstdio>
#include <ctime>

#include "protocols/smtp/ascii.h"
#include "store/queue_id.h"

namespace ringmail::smtp {

namespace {

constexpr size_t soft_line_bytes = 76;    // where we fold
constexpr size_t word_chunk_bytes = 900;  // a longer word is split: stays < 998

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Appends the pieces in one go (also sidesteps GCC 12's -Wrestrict false
// positive on `"literal" + std::string&&`).
template <class... Parts>
void append(std::string& out, const Parts&... parts) {
    (out.append(std::string_view(parts)), ...);
}

template <class... Parts>
std::string cat(const Parts&... parts) {
    std::string s;
    s.reserve((std::string_view(parts).size() + ...));
    append(s, parts...);
    return s;
}

// Untrusted text -> one line of printable bytes: CR, LF, TAB and other
// controls become a space (so nothing can start a line of its own), runs of
// spaces collapse, ends are trimmed. 8-bit bytes become '?' unless allowed.
void append_clean(std::string& out, std::string_view in, bool allow_8bit, size_t cap) {
    const size_t start = out.size();
    bool pending_space = false;
    for (char ch : in) {
        auto c = static_cast<unsigned char>(ch);
        if (c <= 0x20 || c == 0x7f) {
            pending_space = out.size() > start;
            continue;
        }
        if (out.size() - start >= cap) {
            out += "...";
            return;
        }
        if (pending_space) out.push_back(' ');
        pending_space = false;
        out.push_back(c >= 0x80 && !allow_8bit ? '?' : ch);
    }
}

std::string clean(std::string_view in, bool allow_8bit, size_t cap = 900) {
    std::string s;
    append_clean(s, in, allow_8bit, cap);
    return s;
}

// A multi-line SMTP reply ("550-5.1.1 a\r\n550 5.1.1 b") becomes one line
// "550 5.1.1 a b": continuation lines lose their code prefixes, like Postfix.
std::string clean_reply(std::string_view reply) {
    std::string joined;
    joined.reserve(std::min(reply.size(), dsn_max_reply_bytes) + 8);
    std::string_view first_code;  // "550" and "5.1.1" of the first line
    std::string_view first_enhanced;
    bool first = true;
    while (!reply.empty() && joined.size() < dsn_max_reply_bytes) {
        size_t eol = reply.find_first_of("\r\n");
        std::string_view line = reply.substr(0, eol);
        reply = eol == std::string_view::npos ? std::string_view{} : reply.substr(eol + 1);
        if (line.empty()) continue;
        bool coded = line.size() >= 3 && is_digit(line[0]) && is_digit(line[1]) &&
                     is_digit(line[2]) && (line.size() == 3 || line[3] == ' ' || line[3] == '-');
        std::string_view rest = line;
        if (coded) {
            std::string_view code = line.substr(0, 3);
            rest = line.size() > 4 ? line.substr(4) : std::string_view{};
            size_t sp = rest.find(' ');
            std::string_view maybe_enh = rest.substr(0, sp);
            bool enh = maybe_enh.size() >= 5 && is_digit(maybe_enh[0]) && maybe_enh[1] == '.';
            if (first) {
                first_code = code;
                if (enh) first_enhanced = maybe_enh;
                joined.append(code);
                if (!rest.empty()) joined.push_back(' ');
            } else if (code == first_code) {
                if (enh && maybe_enh == first_enhanced)
                    rest = sp == std::string_view::npos ? std::string_view{} : rest.substr(sp + 1);
            } else {
                rest = line;  // a different code: keep the whole line
            }
        }
        if (!first && !joined.empty()) joined.push_back(' ');
        joined.append(rest);
        first = false;
    }
    std::string out;
    append_clean(out, joined, false, dsn_max_reply_bytes);
    return out;
}

// Word-wraps clean text (single spaces, no controls) onto `out`, whose current
// line already holds `used` bytes; each new line starts with `cont`. Words
// longer than word_chunk_bytes are split so no line reaches 998.
void append_wrapped(std::string& out, std::string_view text, size_t used, std::string_view cont) {
    bool line_has_word = false;
    while (!text.empty()) {
        size_t sp = text.find(' ');
        std::string_view word = text.substr(0, sp);
        text = sp == std::string_view::npos ? std::string_view{} : text.substr(sp + 1);
        while (!word.empty()) {
            std::string_view piece = word.substr(0, word_chunk_bytes);
            word.remove_prefix(piece.size());
            size_t need = piece.size() + (line_has_word ? 1 : 0);
            if (line_has_word && used + need > soft_line_bytes) {
                out += "\r\n";
                out += cont;
                used = cont.size();
                line_has_word = false;
                need = piece.size();
            }
            if (line_has_word) out.push_back(' ');
            out.append(piece);
            used += need;
            line_has_word = true;
        }
    }
}

// "Name: value" with value folded (RFC 5322 §2.2.3), then CRLF.
void append_field(std::string& out, std::string_view name, std::string_view clean_value) {
    out.append(name);
    out.append(": ");
    append_wrapped(out, clean_value, name.size() + 2, " ");
    out += "\r\n";
}

void append_date(std::string& out, int64_t unix_s) {
    static constexpr const char* days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static constexpr const char* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                             "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    std::time_t t = static_cast<std::time_t>(unix_s);
    std::tm tm{};
    if (!gmtime_r(&t, &tm)) {
        t = 0;
        gmtime_r(&t, &tm);
    }
    char buf[64];
    int n = std::snprintf(buf, sizeof buf, "%s, %d %s %04d %02d:%02d:%02d +0000",
                          days[tm.tm_wday % 7], tm.tm_mday, months[tm.tm_mon % 12],
                          tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    if (n > 0) out.append(buf, std::min(static_cast<size_t>(n), sizeof buf - 1));
}

// Host names we put in headers: keep only LDH, dots and underscores.
std::string clean_host(std::string_view host) {
    std::string h;
    for (char c : host.substr(0, 255)) {
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '-' ||
            c == '.' || c == '_')
            h.push_back(c);
    }
    if (h.empty()) h = "localhost";
    return h;
}

// The header block: everything up to (not including) the first empty line.
std::string_view header_block(std::string_view msg) {
    size_t pos = 0;
    while (pos < msg.size()) {
        size_t eol = msg.find('\n', pos);
        if (eol == std::string_view::npos) return msg;
        std::string_view line = msg.substr(pos, eol - pos);
        if (line.empty() || line == "\r") return msg.substr(0, pos);
        pos = eol + 1;
    }
    return msg;
}

// Copies text turning bare LF and bare CR into CRLF; ends with CRLF.
void append_crlf_normalised(std::string& out, std::string_view in) {
    size_t run = 0;  // start of the pending verbatim run
    for (size_t i = 0; i < in.size(); ++i) {
        char c = in[i];
        if (c == '\r') {
            if (i + 1 < in.size() && in[i + 1] == '\n') {
                ++i;  // proper CRLF stays in the run
                continue;
            }
            out.append(in.substr(run, i - run));
            out += "\r\n";
            run = i + 1;
        } else if (c == '\n') {
            out.append(in.substr(run, i - run));
            out += "\r\n";
            run = i + 1;
        }
    }
    out.append(in.substr(run));
    if (out.size() < 2 || out.compare(out.size() - 2, 2, "\r\n") != 0) out += "\r\n";
}

}  // namespace

size_t dsn_status(std::string_view reply, dsn_failure failure, char (&out)[12]) {
    const char want = failure == dsn_failure::permanent ? '5' : '4';
    const char* fallback = failure == dsn_failure::permanent ? "5.0.0" : "4.4.7";

    size_t i = 0;
    while (i < reply.size() && (reply[i] == ' ' || reply[i] == '\t')) ++i;
    // "ddd" then ' ' or '-', then class.subject.detail (RFC 3463 §2, RFC 2034).
    if (reply.size() >= i + 4 && is_digit(reply[i]) && is_digit(reply[i + 1]) &&
        is_digit(reply[i + 2]) && (reply[i + 3] == ' ' || reply[i + 3] == '-')) {
        size_t p = i + 4;
        size_t start = p;
        bool ok = p < reply.size() && reply[p] == want && p + 1 < reply.size() &&
                  reply[p + 1] == '.';
        if (ok) {
            p += 2;
            for (int part = 0; part < 2 && ok; ++part) {
                size_t d = 0;
                while (p < reply.size() && is_digit(reply[p]) && d < 4) ++p, ++d;
                ok = d >= 1 && d <= 3;
                if (ok && part == 0) ok = p < reply.size() && reply[p++] == '.';
            }
            ok = ok && (p == reply.size() || reply[p] == ' ' || reply[p] == '\r' ||
                        reply[p] == '\n' || reply[p] == '\t');
        }
        if (ok) {
            size_t n = p - start;  // at most 1+1+3+1+3 = 9
            std::copy_n(reply.data() + start, n, out);
            out[n] = '\0';
            return n;
        }
    }
    size_t n = std::char_traits<char>::length(fallback);
    std::copy_n(fallback, n + 1, out);
    return n;
}

bool wants_failure_notice(const store::recipient& rcpt) {
    if (rcpt.notify == store::notify_unset) return true;  // default FAILURE,DELAY
    if (rcpt.notify & store::notify_never) return false;
    return (rcpt.notify & store::notify_failure) != 0;
}

bool should_bounce(const store::envelope& env, const store::recipient& rcpt) {
    if (env.sender.empty() || env.is_dsn) return false;  // RFC 5321 §4.5.5, §6.2
    return wants_failure_notice(rcpt);
}

bool should_bounce(const store::envelope& env) {
    return std::any_of(env.recipients.begin(), env.recipients.end(), [&](const auto& r) {
        return r.state == store::rcpt_state::failed && should_bounce(env, r);
    });
}

std::string build_dsn(const dsn_input& in) {
    const store::envelope& env = in.original;
    const std::string host = clean_host(in.reporting_mta);
    const bool utf8 = env.smtputf8;

    // What to attach.
    enum class attach { full, headers } what = attach::full;
    std::string_view note;
    if (env.ret == store::dsn_ret::hdrs) {
        what = attach::headers;
    } else if (env.body == store::body_type::binary_mime) {
        what = attach::headers;
        note = "The original message was sent as BINARYMIME; only its headers are attached.";
    } else if (in.message.size() > in.max_attached_bytes) {
        what = attach::headers;
        note = "The original message is too large to return; only its headers are attached.";
    }
    std::string_view attached = what == attach::full ? in.message : header_block(in.message);
    if (attached.size() > in.max_attached_bytes) {
        // A header block larger than the cap: cut at the last line that fits.
        attached = attached.substr(0, in.max_attached_bytes);
        size_t nl = attached.rfind('\n');
        attached = nl == std::string_view::npos ? std::string_view{} : attached.substr(0, nl + 1);
    }
    const bool attached_8bit = has_8bit_octets(attached);

    // Boundary: unguessable seed, and verified absent from the attached text.
    char bbuf[80];
    int bn = std::snprintf(bbuf, sizeof bbuf, "=_ringmail_%s.%llX", store::to_hex(in.unique_seed).c_str(),
                           static_cast<unsigned long long>(in.now));
    std::string boundary(bbuf, static_cast<size_t>(std::max(bn, 0)));
    for (unsigned salt = 0; attached.find(boundary) != std::string_view::npos; ++salt) {
        boundary.resize(static_cast<size_t>(bn));
        boundary += '-';
        boundary += std::to_string(salt);
    }

    std::string out;
    out.reserve(4096 + attached.size() + attached.size() / 32);

    // ---- top-level header --------------------------------------------------
    append(out, "From: Mail Delivery System <MAILER-DAEMON@", host, ">\r\n");
    out += "To: <";
    append_clean(out, env.sender, utf8, 900);
    out += ">\r\n";
    out += "Subject: Undelivered Mail Returned to Sender\r\n";
    out += "Date: ";
    append_date(out, in.now);
    out += "\r\n";
    out += "Message-ID: <";
    out += store::to_hex(static_cast<uint64_t>(in.now)).view();
    out += '.';
    out += store::to_hex(in.unique_seed).view();
    append(out, "@", host, ">\r\n");
    out += "Auto-Submitted: auto-replied\r\n";
    out += "MIME-Version: 1.0\r\n";
    out += "Content-Type: multipart/report; report-type=delivery-status;\r\n";
    append(out, "\tboundary=\"", boundary, "\"\r\n");
    if (attached_8bit || utf8) out += "Content-Transfer-Encoding: 8bit\r\n";
    out += "\r\n";
    out += "This is a MIME-encapsulated message.\r\n\r\n";

    // ---- part 1: human readable --------------------------------------------
    append(out, "--", boundary, "\r\n");
    out += "Content-Description: Notification\r\n";
    out += utf8 ? "Content-Type: text/plain; charset=utf-8\r\n"
                : "Content-Type: text/plain; charset=us-ascii\r\n";
    out += "\r\n";
    append(out, "This is the mail system at host ", host, ".\r\n\r\n");
    out += "I'm sorry to have to inform you that your message could not\r\n"
           "be delivered to one or more recipients. It's attached below.\r\n\r\n"
           "For further assistance, please send mail to postmaster.\r\n\r\n"
           "If you do so, please include this problem report. You can\r\n"
           "delete your own text from the attached returned message.\r\n\r\n"
           "                   The mail system\r\n";
    for (const dsn_recipient& r : in.recipients) {
        std::string line = cat("<", clean(r.address, utf8), ">: ");
        if (r.failure == dsn_failure::expired)
            line += "delivery time expired; last error: ";
        std::string reply = clean_reply(r.reply);
        if (!r.remote_mta.empty()) append(line, "host ", clean(r.remote_mta, false), " said: ");
        line += reply.empty() ? std::string("delivery failed") : reply;
        out += "\r\n";
        append_wrapped(out, line, 0, "    ");
        out += "\r\n";
    }
    if (!note.empty()) {
        out += "\r\n";
        append_wrapped(out, note, 0, "");
        out += "\r\n";
    }

    // ---- part 2: message/delivery-status (RFC 3464 §2.2, §2.3) -------------
    append(out, "\r\n--", boundary, "\r\n");
    out += "Content-Description: Delivery report\r\n";
    out += "Content-Type: message/delivery-status\r\n";
    if (utf8) out += "Content-Transfer-Encoding: 8bit\r\n";
    out += "\r\n";
    append_field(out, "Reporting-MTA", cat("dns; ", host));
    append_field(out, "X-Ringmail-Queue-ID", store::to_hex(env.id).view());
    append_field(out, "X-Ringmail-Sender", cat("rfc822; ", clean(env.sender, utf8)));
    if (!env.envid.empty()) append_field(out, "Original-Envelope-Id", clean(env.envid, false));
    std::string date;
    append_date(date, env.received_at);
    append_field(out, "Arrival-Date", date);
    for (const dsn_recipient& r : in.recipients) {
        out += "\r\n";
        append_field(out, "Final-Recipient", cat("rfc822; ", clean(r.address, utf8)));
        if (!r.orcpt.empty()) {
            std::string orcpt = clean(r.orcpt, utf8);
            append_field(out, "Original-Recipient",
                         orcpt.find(';') != std::string::npos ? orcpt : cat("rfc822; ", orcpt));
        }
        append_field(out, "Action", "failed");
        char status[12];
        size_t sn = dsn_status(r.reply, r.failure, status);
        append_field(out, "Status", std::string_view(status, sn));
        if (!r.remote_mta.empty()) append_field(out, "Remote-MTA", cat("dns; ", clean_host(r.remote_mta)));
        std::string reply = clean_reply(r.reply);
        if (!reply.empty()) {
            bool smtp = reply.size() >= 3 && is_digit(reply[0]) && is_digit(reply[1]) &&
                        is_digit(reply[2]);
            append_field(out, "Diagnostic-Code", cat(smtp ? "smtp; " : "X-ringmail; ", reply));
        }
        if (r.failure == dsn_failure::expired) {
            std::string now;
            append_date(now, in.now);
            append_field(out, "Last-Attempt-Date", now);
        }
    }

    // ---- part 3: the original, or its headers ------------------------------
    append(out, "\r\n--", boundary, "\r\n");
    if (what == attach::full) {
        out += "Content-Description: Undelivered Message\r\n";
        out += "Content-Type: message/rfc822\r\n";
    } else {
        out += "Content-Description: Undelivered Message Headers\r\n";
        out += "Content-Type: text/rfc822-headers\r\n";
    }
    if (attached_8bit) out += "Content-Transfer-Encoding: 8bit\r\n";
    out += "\r\n";
    append_crlf_normalised(out, attached);

    append(out, "\r\n--", boundary, "--\r\n");
    return out;
}

}  // namespace ringmail::smtp
