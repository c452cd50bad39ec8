// smtputf8: whether a message flagged SMTPUTF8 really needs it (RFC 6531).
//
// A client may send SMTPUTF8 for mail that is plain ASCII after all. A next
// hop without the extension can still take such a message unchanged: only a
// UTF-8 envelope address or 8-bit octets in the header section need it
// (RFC 6531 §3.5 forbids a downgrade of those). 8-bit octets in the body
// alone are 8BITMIME's business, not SMTPUTF8's. Postfix decides the same
// way (smtputf8_autodetect_classes).
#pragma once

#include <span>

#include "store/envelope.h"
#include "store/spool.h"

namespace ringmail::smtp {

// True when the sender, one of `recipients` (indexes into env.recipients) or
// the header section of `message` (up to the first empty line, across the
// stored pieces) has an octet >= 0x80.
bool needs_smtputf8(const store::envelope& env, std::span<const size_t> recipients, store::body_view message);

}  // namespace ringmail::smtp
