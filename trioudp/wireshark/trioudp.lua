-- Wireshark dissector for the trioudp wire protocol, version 1
-- (docs/protocol.md is the specification; trioudp/_frame.py the reference decoder).
--
-- Install: `trioudp wireshark --install` copies this file into Wireshark's
-- personal Lua plugins folder (`tshark -G folders` names it); or run
-- `tshark -X lua_script:/path/to/trioudp.lua ...` (`trioudp wireshark` prints
-- the path). Tested with Wireshark 4.0 (Lua 5.2); written to run on the Lua
-- 5.3 and 5.4 of later versions too.
--
-- Finding frames:
--   * heuristically on every UDP datagram of at least 20 bytes that starts
--     with the magic "tU" and version 1 (nothing else is claimed, so a
--     datagram with another magic or version, or shorter than the smallest
--     frame, is left to other dissectors);
--   * on the UDP port the preference trioudp.port names (0, the default:
--     none), or on any port with Decode As (udp.port == N -> TRIOUDP). There
--     every datagram is taken as a frame, and one that is too short, has the
--     wrong magic or another version is shown as malformed.
--
-- GSO and GRO aggregates: trioudp on Linux sends a run of frames of one size
-- (the last may be shorter) as one buffer with UDP GSO (UDP_SEGMENT), which
-- the kernel or the network card cuts into datagrams; a receiver with UDP GRO
-- may get such runs coalesced again. A capture on the sending host (loopback
-- included), or on a receiving host with GRO, shows that buffer as one UDP
-- datagram: 2 to 64 frames back to back, 65535 bytes at most. The dissector
-- cuts a datagram into frames at the smallest segment size s for which it
-- makes 2 to 64 pieces of s bytes (the last may be shorter, but not shorter
-- than the smallest frame), if there is one such that:
--   * if its first frame has no AUTH flag: its CRC as one frame is bad, every
--     piece starts with the magic and version 1, and the first piece is a
--     frame with a good CRC (its last 4 bytes are the CRC32C of the bytes
--     before them: a chance match is 1 in 2^32). The other pieces need not be
--     good: each is checked as a frame of its own, so a damaged one is
--     flagged among good ones. A datagram whose CRC is good is one frame.
--   * if it has AUTH (a tag, which cannot be checked without the key): by
--     structure alone. Every piece starts with the magic, version 1, a flags
--     byte with AUTH and the first frame's session id (64 bits, random at
--     least in their low half), and is at least 32 bytes long.
-- Each piece is then dissected as a frame of its own, in a trioudp tree of
-- its own (CRC check and expert infos included), with generated fields that
-- say where it came from (trioudp.gso.*). Only a datagram that starts with
-- the magic and version 1, all captured, is searched. The search runs the
-- CRC at most once over the bytes of the first piece (carried on from one
-- size tried to the next), and checks at most 64 piece starts for each place
-- where the magic and version occur.
-- Limits: an aggregate whose first frame is damaged is not cut: it is shown
-- as one frame with a bad CRC (flagged, as it should be, but its other frames
-- are not shown). A keyed run that mixes session ids (an ACK for the peer's
-- session between data frames of the same size) is not cut either: it is
-- shown as one frame. And a single keyed frame whose
-- message holds copies of the frame's own first 12 bytes (magic, version,
-- flags with AUTH, session id) at just such places would be shown cut up,
-- where the library takes it whole: the tag, which would tell, needs the key.
--
-- Expert info: every fault for which trioudp's receiver drops a frame is an
-- error: "trioudp.malformed" (the message says what is wrong) or
-- "trioudp.crc.bad". A frame without any error is one the library decodes.
-- The tag of an authenticated frame is shown, not checked (that needs the key).
--
-- Fields (display filter names):
--   trioudp.magic              uint16  0x7455 ("tU")
--   trioudp.version            uint8   1
--   trioudp.flags              uint8   with the bits
--     trioudp.flags.fragment (0x01)  trioudp.flags.topic (0x02)
--     trioudp.flags.group (0x04)     trioudp.flags.auth (0x08)
--     trioudp.flags.reliable (0x10)  trioudp.flags.control (0x20)
--     trioudp.flags.bundle (0x40)    trioudp.flags.reserved (0x80, must be 0)
--   trioudp.session            uint64  session id
--   trioudp.seq                uint32  message sequence number (data frames;
--                                      a bundle's first message)
--   trioudp.packet             uint32  reliable packet number (RELIABLE)
--   trioudp.oldest             uint32  sender's oldest unacknowledged message (RELIABLE)
--   trioudp.msg_length         uint32  whole message length (FRAGMENT)
--   trioudp.frag_index         uint16  fragment index, 0-based (FRAGMENT)
--   trioudp.frag_count         uint16  fragment count (FRAGMENT)
--   trioudp.topic_length       uint8   (TOPIC)
--   trioudp.topic              string  UTF-8 (TOPIC)
--   trioudp.payload            bytes   the message, or this fragment of it
--   trioudp.bundle.count       uint16  messages in a BUNDLE frame (generated)
--   trioudp.bundle.entry       subtree, one per message, holding
--     trioudp.bundle.length    uint16
--     trioudp.bundle.seq       uint32  its sequence number (generated)
--     trioudp.bundle.message   bytes
--   trioudp.control.kind       uint8   1 ACK, 2 PING, 3 REJECT (CONTROL)
--   trioudp.control.value      uint32  the value field of a CONTROL frame of unknown kind
--   trioudp.control.body       bytes   the body of a CONTROL frame of unknown kind
--   trioudp.ack.window         uint32  highest sequence number the receiver takes now
--   trioudp.ack.delay          uint32  acknowledgement delay, microseconds
--   trioudp.ack.receiver       uint64  receiver id
--   trioudp.ack.delivered      uint32  next sequence number the receiver delivers
--   trioudp.ack.range_count    uint8
--   trioudp.ack.range          subtree, one per range, newest first, holding
--     trioudp.ack.largest      uint32  packet number
--     trioudp.ack.smallest     uint32  packet number
--   trioudp.ping.oldest        uint32  sender's oldest unacknowledged message
--   trioudp.ping.body_kind     uint8   1: path MTU probe
--   trioudp.ping.probe_packet  uint32  a probe's packet number
--   trioudp.ping.padding       bytes   a probe's zeros, up to the size probed
--   trioudp.ping.body          bytes   a PING body of another kind (receivers ignore it)
--   trioudp.reject.reason      uint32  1 receiver is not reliable, 2 it takes only reliable frames
--   trioudp.reject.body        bytes   (receivers ignore it)
--   trioudp.extra              bytes   bytes after the last field that no field explains
--   trioudp.crc                uint32  CRC32C (Castagnoli) of every byte before it
--   trioudp.crc.status         uint8   0 bad, 1 good (generated)
--   trioudp.crc.calculated     uint32  what the CRC should be, on a bad one (generated)
--   trioudp.tag                bytes   16-byte BLAKE2b tag (AUTH), not checked
--   trioudp.gso.segment_size   uint16  segment size of the GSO aggregate holding
--                                      this frame (generated, as the two below)
--   trioudp.gso.segments       uint8   frames in that aggregate
--   trioudp.gso.segment        uint8   this frame's place in it, from 1
--
-- Info column: "DATA seq=5 frag=1/7 topic=x len=1172", "BUNDLE seq=4..6 n=3",
-- "ACK window=15 delivered=7 delay=250us ranges=7-5", "PING oldest=6",
-- "PING oldest=0 probe packet=5 size=1472", "REJECT reason=1 (...)"; "pkt=N
-- oldest=M" on reliable frames, [AUTH] / [GROUP] marks, and [CRC BAD] /
-- [MALFORMED: why] on damaged ones. frag=index/count, the index 0-based. A
-- GSO aggregate lists its frames, " | " between them, then "[GSO n x s]"
-- (the multiplication sign, U+00D7): n frames of s bytes, the last maybe
-- shorter.

-- Bit operations: bit32 in Lua 5.2 (Wireshark 4.0 to 4.2), Wireshark's own
-- BitOp "bit" library elsewhere, or the operators of Lua 5.3+ (compiled at
-- run time, since Lua 5.2 cannot parse them).
local band, bxor, rshift
if bit32 then
    band, bxor, rshift = bit32.band, bit32.bxor, bit32.rshift
elseif bit then
    band, bxor, rshift = bit.band, bit.bxor, bit.rshift
else
    band, bxor, rshift = load(
        "return function(a, b) return a & b end, function(a, b) return a ~ b end, "
            .. "function(a, n) return (a & 0xFFFFFFFF) >> n end"
    )()
end

local TWO32 = 4294967296
local HEADER_SIZE = 16
-- The sequence number (a CONTROL frame's value) in the header.
local SEQ_AT = 12
local CRC_SIZE = 4
local TAG_SIZE = 16
local SMALLEST = HEADER_SIZE + CRC_SIZE
local KEYED_SMALLEST = HEADER_SIZE + TAG_SIZE
-- Magic and version, as a frame starts.
local PREFIX = "tU\1"
-- The session id's bytes in the header (1-based, for string.sub).
local SESSION_FIRST, SESSION_LAST = 5, 12
-- A GSO send's limits (trioudp/_offload.py; the kernel's UDP_MAX_SEGMENTS),
-- and the most a UDP datagram holds.
local GSO_MAX_SEGMENTS = 64
local GSO_MAX_BYTES = 65535
-- U+00D7 MULTIPLICATION SIGN, in UTF-8.
local TIMES = "\195\151"
local MAX_ACK_RANGES = 32
-- A CONTROL frame's kind byte, and its body after it.
local KIND_AT = HEADER_SIZE
local BODY_AT = HEADER_SIZE + 1
-- An ACK body: delay (4), receiver id (8), delivered (4), range count (1),
-- then 8 bytes a range.
local ACK_DELAY, ACK_RECEIVER, ACK_DELIVERED = BODY_AT, BODY_AT + 4, BODY_AT + 12
local ACK_COUNT, ACK_RANGES = BODY_AT + 16, BODY_AT + 17
local ACK_FIXED = ACK_RANGES - BODY_AT
-- A path MTU probe's body: its kind byte, packet number, then zeros.
local PROBE_PACKET, PROBE_PADDING = BODY_AT + 1, BODY_AT + 5

local FRAGMENT, TOPIC, GROUP, AUTH = 0x01, 0x02, 0x04, 0x08
local RELIABLE, CONTROL, BUNDLE, RESERVED = 0x10, 0x20, 0x40, 0x80
local KIND_ACK, KIND_PING, KIND_REJECT = 1, 2, 3
local PROBE_BODY = 1

-- CRC-32C (Castagnoli), reflected polynomial 0x82F63B78, one table lookup per byte.
local CRC_TABLE = {}
for n = 0, 255 do
    local c = n
    for _ = 1, 8 do
        if band(c, 1) ~= 0 then
            c = bxor(rshift(c, 1), 0x82F63B78)
        else
            c = rshift(c, 1)
        end
    end
    CRC_TABLE[n] = c
end

-- The CRC register after bytes first to last (1-based) of s, from crc on:
-- start from CRC_START, then CRC_START's complement (crc32c_value) is the CRC.
local CRC_START = 0xFFFFFFFF

local function crc32c_update(crc, s, first, last)
    local byte = string.byte
    for i = first, last do
        crc = bxor(CRC_TABLE[band(bxor(crc, byte(s, i)), 0xFF)], rshift(crc, 8))
    end
    return crc
end

local function crc32c_value(crc)
    return bxor(crc, 0xFFFFFFFF) % TWO32
end

local function crc32c(s)
    return crc32c_value(crc32c_update(CRC_START, s, 1, #s))
end

-- The big-endian 32-bit number at bytes at + 1 to at + 4 of s.
local function uint32_at(s, at)
    local a, b, c, d = string.byte(s, at + 1, at + 4)
    return ((a * 256 + b) * 256 + c) * 256 + d
end

-- Whether s is well-formed UTF-8 as Python's strict decoder takes it (no
-- overlong forms, no surrogates, nothing above U+10FFFF).
local function is_utf8(s)
    local byte = string.byte
    local i, n = 1, #s
    while i <= n do
        local c = byte(s, i)
        local need, low, high = 0, 0x80, 0xBF
        if c < 0x80 then
            need = 0
        elseif c >= 0xC2 and c <= 0xDF then
            need = 1
        elseif c == 0xE0 then
            need, low = 2, 0xA0
        elseif c == 0xED then
            need, high = 2, 0x9F
        elseif c >= 0xE1 and c <= 0xEF then
            need = 2
        elseif c == 0xF0 then
            need, low = 3, 0x90
        elseif c >= 0xF1 and c <= 0xF3 then
            need = 3
        elseif c == 0xF4 then
            need, high = 3, 0x8F
        else
            return false
        end
        if i + need > n then
            return false
        end
        for k = 1, need do
            local d = byte(s, i + k)
            if k == 1 then
                if d < low or d > high then
                    return false
                end
            elseif d < 0x80 or d > 0xBF then
                return false
            end
        end
        i = i + need + 1
    end
    return true
end

local trioudp = Proto.new("trioudp", "trioudp messaging protocol")

local KINDS = { [KIND_ACK] = "ACK", [KIND_PING] = "PING", [KIND_REJECT] = "REJECT" }
local REASONS = {
    [1] = "the receiver is not reliable",
    [2] = "the receiver takes only reliable frames",
}
local CRC_STATUS = { [0] = "Bad", [1] = "Good" }
local BODY_KINDS = { [PROBE_BODY] = "path MTU probe" }

local F = {
    magic = ProtoField.uint16("trioudp.magic", "Magic", base.HEX),
    version = ProtoField.uint8("trioudp.version", "Version", base.DEC),
    flags = ProtoField.uint8("trioudp.flags", "Flags", base.HEX),
    fragment = ProtoField.bool("trioudp.flags.fragment", "FRAGMENT", 8, nil, FRAGMENT),
    topic_flag = ProtoField.bool("trioudp.flags.topic", "TOPIC", 8, nil, TOPIC),
    group = ProtoField.bool("trioudp.flags.group", "GROUP", 8, nil, GROUP),
    auth = ProtoField.bool("trioudp.flags.auth", "AUTH", 8, nil, AUTH),
    reliable = ProtoField.bool("trioudp.flags.reliable", "RELIABLE", 8, nil, RELIABLE),
    control = ProtoField.bool("trioudp.flags.control", "CONTROL", 8, nil, CONTROL),
    bundle = ProtoField.bool("trioudp.flags.bundle", "BUNDLE", 8, nil, BUNDLE),
    reserved = ProtoField.bool("trioudp.flags.reserved", "Reserved", 8, nil, RESERVED),
    session = ProtoField.uint64("trioudp.session", "Session id", base.HEX),
    seq = ProtoField.uint32("trioudp.seq", "Sequence number", base.DEC),
    packet = ProtoField.uint32("trioudp.packet", "Packet number", base.DEC),
    oldest = ProtoField.uint32("trioudp.oldest", "Oldest unacknowledged", base.DEC),
    msg_length = ProtoField.uint32("trioudp.msg_length", "Message length", base.DEC),
    frag_index = ProtoField.uint16("trioudp.frag_index", "Fragment index", base.DEC),
    frag_count = ProtoField.uint16("trioudp.frag_count", "Fragment count", base.DEC),
    topic_length = ProtoField.uint8("trioudp.topic_length", "Topic length", base.DEC),
    topic = ProtoField.string("trioudp.topic", "Topic"),
    payload = ProtoField.bytes("trioudp.payload", "Payload"),
    bundle_count = ProtoField.uint16("trioudp.bundle.count", "Bundled messages", base.DEC),
    bundle_entry = ProtoField.none("trioudp.bundle.entry", "Message"),
    bundle_length = ProtoField.uint16("trioudp.bundle.length", "Length", base.DEC),
    bundle_seq = ProtoField.uint32("trioudp.bundle.seq", "Sequence number", base.DEC),
    bundle_message = ProtoField.bytes("trioudp.bundle.message", "Message"),
    kind = ProtoField.uint8("trioudp.control.kind", "Control kind", base.DEC, KINDS),
    control_value = ProtoField.uint32("trioudp.control.value", "Value", base.DEC),
    control_body = ProtoField.bytes("trioudp.control.body", "Body"),
    ack_window = ProtoField.uint32("trioudp.ack.window", "Window limit", base.DEC),
    ack_delay = ProtoField.uint32("trioudp.ack.delay", "Ack delay (microseconds)", base.DEC),
    ack_receiver = ProtoField.uint64("trioudp.ack.receiver", "Receiver id", base.HEX),
    ack_delivered = ProtoField.uint32("trioudp.ack.delivered", "Delivered up to", base.DEC),
    ack_range_count = ProtoField.uint8("trioudp.ack.range_count", "Range count", base.DEC),
    ack_range = ProtoField.none("trioudp.ack.range", "Range"),
    ack_largest = ProtoField.uint32("trioudp.ack.largest", "Largest packet", base.DEC),
    ack_smallest = ProtoField.uint32("trioudp.ack.smallest", "Smallest packet", base.DEC),
    ping_oldest = ProtoField.uint32("trioudp.ping.oldest", "Oldest unacknowledged", base.DEC),
    ping_body_kind = ProtoField.uint8("trioudp.ping.body_kind", "Body kind", base.DEC, BODY_KINDS),
    probe_packet = ProtoField.uint32("trioudp.ping.probe_packet", "Probe packet number", base.DEC),
    padding = ProtoField.bytes("trioudp.ping.padding", "Padding"),
    ping_body = ProtoField.bytes("trioudp.ping.body", "Body (ignored)"),
    reject_reason = ProtoField.uint32("trioudp.reject.reason", "Reason", base.DEC, REASONS),
    reject_body = ProtoField.bytes("trioudp.reject.body", "Body (ignored)"),
    extra = ProtoField.bytes("trioudp.extra", "Unexplained bytes"),
    crc = ProtoField.uint32("trioudp.crc", "CRC32C", base.HEX),
    crc_status = ProtoField.uint8("trioudp.crc.status", "CRC32C status", base.DEC, CRC_STATUS),
    crc_calculated = ProtoField.uint32("trioudp.crc.calculated", "Calculated CRC32C", base.HEX),
    tag = ProtoField.bytes("trioudp.tag", "Authentication tag"),
    gso_segment_size = ProtoField.uint16("trioudp.gso.segment_size", "GSO segment size", base.DEC),
    gso_segments = ProtoField.uint8("trioudp.gso.segments", "GSO segments", base.DEC),
    gso_segment = ProtoField.uint8("trioudp.gso.segment", "GSO segment number", base.DEC),
}
local fields = {}
for _, field in pairs(F) do
    fields[#fields + 1] = field
end
trioudp.fields = fields

local ERROR = expert.severity.ERROR
local E_MALFORMED =
    ProtoExpert.new("trioudp.malformed", "Malformed trioudp frame", expert.group.MALFORMED, ERROR)
local E_CRC_BAD = ProtoExpert.new("trioudp.crc.bad", "Bad CRC32C", expert.group.CHECKSUM, ERROR)
trioudp.experts = { E_MALFORMED, E_CRC_BAD }

-- What the header's sequence field holds in a CONTROL frame of each kind.
local VALUE_FIELDS = {
    [KIND_ACK] = F.ack_window,
    [KIND_PING] = F.ping_oldest,
    [KIND_REJECT] = F.reject_reason,
}

-- One frame being dissected: its tree, and what the Info column will say.
local Frame = {}
Frame.__index = Frame

function Frame:malformed(item, text)
    item:add_proto_expert_info(E_MALFORMED, text)
    self.problems[#self.problems + 1] = text
end

function Frame:uint(offset, length)
    return self.tvb(offset, length):uint()
end

function Frame:note(text)
    self.info[#self.info + 1] = text
end

-- The bytes from offset to the payload's end, if any, as a field.
function Frame:rest(field, offset)
    if offset < self.stop then
        return self.root:add(field, self.tvb(offset, self.stop - offset))
    end
end

local function range_text(largest, smallest)
    if largest == smallest then
        return tostring(largest)
    end
    return largest .. "-" .. smallest
end

function Frame:ack()
    local root, tvb, stop = self.root, self.tvb, self.stop
    local size = stop - BODY_AT
    if size < ACK_FIXED then
        local body = self:rest(F.control_body, BODY_AT)
        self:malformed(body or root, "an ACK shorter than its fixed fields")
        return
    end
    local count = self:uint(ACK_COUNT, 1)
    root:add(F.ack_delay, tvb(ACK_DELAY, 4))
    root:add(F.ack_receiver, tvb(ACK_RECEIVER, 8))
    root:add(F.ack_delivered, tvb(ACK_DELIVERED, 4))
    local count_item = root:add(F.ack_range_count, tvb(ACK_COUNT, 1))
    if count > MAX_ACK_RANGES or size ~= ACK_FIXED + 8 * count then
        self:malformed(count_item, "an ACK of " .. size .. " bytes does not hold its " .. count .. " ranges")
    end
    local texts = {}
    local offset = ACK_RANGES
    for _ = 1, count do
        if offset + 8 > stop then
            break
        end
        local largest, smallest = self:uint(offset, 4), self:uint(offset + 4, 4)
        local item = root:add(F.ack_range, tvb(offset, 8))
        item:append_text(": " .. range_text(largest, smallest))
        item:add(F.ack_largest, tvb(offset, 4))
        item:add(F.ack_smallest, tvb(offset + 4, 4))
        -- Serial-number arithmetic over 32 bits, as the library compares them.
        if (largest - smallest) % TWO32 >= TWO32 / 2 then
            self:malformed(item, "an ACK range whose largest is below its smallest")
        end
        texts[#texts + 1] = range_text(largest, smallest)
        offset = offset + 8
    end
    self:rest(F.extra, offset)
    self:note("window=" .. self:uint(SEQ_AT, 4))
    self:note("delivered=" .. self:uint(ACK_DELIVERED, 4))
    self:note("delay=" .. self:uint(ACK_DELAY, 4) .. "us")
    self:note("ranges=" .. table.concat(texts, ","))
end

function Frame:ping()
    local root, tvb, stop = self.root, self.tvb, self.stop
    self:note("oldest=" .. self:uint(SEQ_AT, 4))
    if stop >= PROBE_PADDING and self:uint(BODY_AT, 1) == PROBE_BODY then
        root:add(F.ping_body_kind, tvb(BODY_AT, 1))
        root:add(F.probe_packet, tvb(PROBE_PACKET, 4))
        self:rest(F.padding, PROBE_PADDING)
        self:note("probe packet=" .. self:uint(PROBE_PACKET, 4) .. " size=" .. self.size)
    else
        -- Empty, or of a kind not known yet (receivers ignore it).
        self:rest(F.ping_body, BODY_AT)
    end
end

function Frame:control(flags_item)
    local root, tvb, flags = self.root, self.tvb, self.flags
    if band(flags, 0xFF - CONTROL - AUTH) ~= 0 then
        self:malformed(flags_item, string.format("a control frame with other flags (0x%02x)", flags))
    end
    if self.stop == HEADER_SIZE then
        root:add(F.control_value, tvb(SEQ_AT, 4))
        self:note("CONTROL")
        self:malformed(root, "a control frame without a kind")
        return
    end
    local kind = self:uint(KIND_AT, 1)
    root:add(VALUE_FIELDS[kind] or F.control_value, tvb(SEQ_AT, 4))
    local kind_item = root:add(F.kind, tvb(KIND_AT, 1))
    self:note(KINDS[kind] or ("CONTROL kind=" .. kind))
    if kind == KIND_ACK then
        self:ack()
    elseif kind == KIND_PING then
        self:ping()
    elseif kind == KIND_REJECT then
        local reason = self:uint(SEQ_AT, 4)
        self:note("reason=" .. reason .. " (" .. (REASONS[reason] or "unknown") .. ")")
        self:rest(F.reject_body, BODY_AT)
    else
        self:malformed(kind_item, "unknown control kind " .. kind)
        self:rest(F.control_body, BODY_AT)
    end
end

function Frame:bundle(offset)
    local root, tvb, stop = self.root, self.tvb, self.stop
    local sequence = self:uint(SEQ_AT, 4)
    -- The messages first (offset, length), so that their count comes before them.
    local entries = {}
    local position = offset
    while position + 2 <= stop do
        local length = self:uint(position, 2)
        entries[#entries + 1] = { position, length }
        position = position + 2 + length
    end
    local whole = position <= stop and #entries or #entries - 1
    local count_item = root:add(F.bundle_count, whole):set_generated()
    for number, entry in ipairs(entries) do
        local start, length = entry[1], entry[2]
        local item = root:add(F.bundle_entry, tvb(start, math.min(2 + length, stop - start)))
        local entry_sequence = (sequence + number - 1) % TWO32
        item:add(F.bundle_length, tvb(start, 2))
        item:add(F.bundle_seq, entry_sequence):set_generated()
        if start + 2 + length > stop then
            item:add(F.bundle_message, tvb(start + 2, stop - start - 2))
            self:malformed(item, "a bundled message of " .. length .. " bytes runs past the frame's end")
        else
            item:add(F.bundle_message, tvb(start + 2, length))
            item:append_text(": " .. entry_sequence .. ", " .. length .. " bytes")
        end
    end
    if position < stop then
        local extra = root:add(F.extra, tvb(position, stop - position))
        self:malformed(extra, "a bundle's last message length is cut off")
    end
    if #entries == 0 and position >= stop then
        self:malformed(count_item, "a bundle frame without messages")
    end
    local last = (sequence + math.max(whole - 1, 0)) % TWO32
    self.info[self.seq_note] = "seq=" .. sequence .. ".." .. last .. " n=" .. whole
end

function Frame:data(flags_item)
    local root, tvb, flags, stop = self.root, self.tvb, self.flags, self.stop
    local reliable = band(flags, RELIABLE) ~= 0
    local fragmented = band(flags, FRAGMENT) ~= 0
    local bundled = band(flags, BUNDLE) ~= 0
    root:add(F.seq, tvb(SEQ_AT, 4))
    self:note(bundled and "BUNDLE" or "DATA")
    -- (a bundle's numbers are known once its messages are counted)
    self:note("seq=" .. self:uint(SEQ_AT, 4))
    self.seq_note = #self.info
    local offset = HEADER_SIZE
    if reliable then
        if band(flags, GROUP) ~= 0 then
            self:malformed(flags_item, "a group frame cannot be reliable")
        end
        if stop < offset + 8 then
            self:malformed(root, self.size .. " bytes is too short for a reliable frame")
            return
        end
        root:add(F.packet, tvb(offset, 4))
        root:add(F.oldest, tvb(offset + 4, 4))
        self:note("pkt=" .. self:uint(offset, 4) .. " oldest=" .. self:uint(offset + 4, 4))
        offset = offset + 8
    end
    local length, index, count = 0, 0, 1
    if fragmented then
        if stop < offset + 8 then
            self:malformed(root, self.size .. " bytes is too short for a fragment")
            return
        end
        length, index, count = self:uint(offset, 4), self:uint(offset + 4, 2), self:uint(offset + 6, 2)
        root:add(F.msg_length, tvb(offset, 4))
        root:add(F.frag_index, tvb(offset + 4, 2))
        root:add(F.frag_count, tvb(offset + 6, 2))
        self:note("frag=" .. index .. "/" .. count)
        offset = offset + 8
    end
    if band(flags, TOPIC) ~= 0 then
        if offset >= stop then
            self:malformed(root, "topic length missing")
            return
        end
        local size = self:uint(offset, 1)
        local size_item = root:add(F.topic_length, tvb(offset, 1))
        if size == 0 or size > stop - offset - 1 then
            self:malformed(size_item, "topic length zero, or past the end of the frame")
            return
        end
        local range = tvb(offset + 1, size)
        local raw = range:raw()
        -- Given as a value: Wireshark would flag a NUL in a topic, which is valid.
        if is_utf8(raw) then
            root:add(F.topic, range, raw)
            self:note("topic=" .. raw)
        else
            local shown = raw:gsub("[^\32-\126]", function(c)
                return string.format("\\x%02x", c:byte())
            end)
            self:malformed(root:add(F.topic, range, shown), "topic is not UTF-8")
        end
        offset = offset + 1 + size
    end
    if bundled then
        if fragmented then
            self:malformed(flags_item, "a bundle frame cannot be a fragment")
        end
        self:bundle(offset)
        return
    end
    local payload = stop - offset
    root:add(F.payload, tvb(offset, payload))
    self:note("len=" .. payload)
    if not fragmented then
        return
    end
    if index >= count then
        self:malformed(root, "fragment index " .. index .. " is not below its count " .. count)
    elseif payload == 0 or count > length or payload > length then
        self:malformed(
            root,
            "fragment of " .. payload .. " bytes, " .. count .. " fragments, " .. length .. " total"
        )
    elseif count == 1 and payload ~= length then
        self:malformed(root, "a single fragment that is not the whole message")
    end
end

-- The fixed header fields that fit in a datagram too short for a frame.
local function partial_header(root, tvb, size)
    local parts = {
        { F.magic, 0, 2 },
        { F.version, 2, 1 },
        { F.flags, 3, 1 },
        { F.session, 4, 8 },
        { F.seq, SEQ_AT, 4 },
    }
    for _, part in ipairs(parts) do
        if size >= part[2] + part[3] then
            root:add(part[1], tvb(part[2], part[3]))
        end
    end
end

function Frame:frame()
    local root, tvb, size = self.root, self.tvb, self.size
    local flags = self:uint(3, 1)
    self.flags = flags
    local flags_item = root:add(F.flags, tvb(3, 1))
    local bits = { F.fragment, F.topic_flag, F.group, F.auth, F.reliable, F.control, F.bundle, F.reserved }
    for _, field in ipairs(bits) do
        flags_item:add(field, tvb(3, 1))
    end
    if band(flags, RESERVED) ~= 0 then
        self:malformed(flags_item, string.format("unknown flag bits 0x%02x", band(flags, RESERVED)))
    end
    root:add(F.session, tvb(4, 8))
    local keyed = band(flags, AUTH) ~= 0
    self.stop = size - (keyed and TAG_SIZE or CRC_SIZE)
    if self.stop < HEADER_SIZE then
        root:add(F.seq, tvb(SEQ_AT, 4))
        self:malformed(root, size .. " bytes is too short for an authenticated frame")
        return
    end
    if band(flags, CONTROL) ~= 0 then
        self:control(flags_item)
    else
        self:data(flags_item)
    end
    local stop = self.stop
    if keyed then
        local item = root:add(F.tag, tvb(stop, TAG_SIZE))
        item:append_text(" (not checked: that needs the shared key)")
        self:note("[AUTH]")
    else
        local wanted = self:uint(stop, 4)
        local computed = self.computed or crc32c(tvb:raw(0, stop))
        local item = root:add(F.crc, tvb(stop, CRC_SIZE))
        local good = wanted == computed
        root:add(F.crc_status, good and 1 or 0):set_generated()
        if good then
            item:append_text(" [correct]")
        else
            item:append_text(string.format(" [incorrect, should be 0x%08x]", computed))
            root:add(F.crc_calculated, computed):set_generated()
            local text = string.format("Bad CRC32C: 0x%08x, should be 0x%08x", wanted, computed)
            item:add_proto_expert_info(E_CRC_BAD, text)
            self.crc_bad = true
        end
    end
    if band(flags, GROUP) ~= 0 then
        self:note("[GROUP]")
    end
end

-- GSO aggregates (see the top of this file).

-- How many pieces of s bytes the size bytes of raw make, if they can be a GSO
-- run: 2 to GSO_MAX_SEGMENTS of them, the last not shorter than smallest,
-- each after the first starting as starts(raw, offset) says (offset 0-based).
local function pieces(raw, size, s, smallest, starts)
    local count = math.floor((size + s - 1) / s)
    if count < 2 or count > GSO_MAX_SEGMENTS or size - (count - 1) * s < smallest then
        return nil
    end
    for number = 1, count - 1 do
        if not starts(raw, number * s) then
            return nil
        end
    end
    return count
end

-- The segment size and count of the aggregate raw (size bytes) is, or nil:
-- the smallest s where the magic and version occur, for which pieces() holds
-- and proven(s) is true. proven is asked about sizes in increasing order.
local function segments(raw, size, smallest, starts, proven)
    -- (up to 64 pieces: the segments are at least a 64th of the whole)
    local from = math.max(smallest, math.floor((size + GSO_MAX_SEGMENTS - 1) / GSO_MAX_SEGMENTS))
    while true do
        local found = string.find(raw, PREFIX, from + 1, true)
        -- (past size - smallest, the last piece would be too short)
        if not found or found - 1 > size - smallest then
            return nil
        end
        local s = found - 1
        local count = pieces(raw, size, s, smallest, starts)
        if count and proven(s) then
            return s, count
        end
        from = found
    end
end

local function starts_with_prefix(raw, offset)
    return string.sub(raw, offset + 1, offset + 3) == PREFIX
end

-- Whether the datagram tvb (size bytes, all captured) is a GSO aggregate: its
-- segment size and count, or nil. Also the CRC32C of all but its last 4
-- bytes, when that was computed (and so need not be again).
local function aggregate(tvb, size)
    if size < 2 * SMALLEST or size > GSO_MAX_BYTES or tvb:len() < size then
        return nil
    end
    local raw = tvb:raw(0, size)
    if string.sub(raw, 1, 3) ~= PREFIX then
        return nil
    end
    if band(string.byte(raw, 4), AUTH) ~= 0 then
        local session = string.sub(raw, SESSION_FIRST, SESSION_LAST)
        local function keyed_frame_at(data, offset)
            return starts_with_prefix(data, offset)
                and band(string.byte(data, offset + 4), AUTH) ~= 0
                and string.sub(data, offset + SESSION_FIRST, offset + SESSION_LAST) == session
        end
        local function structure_only()
            return true
        end
        return segments(raw, size, KEYED_SMALLEST, keyed_frame_at, structure_only)
    end
    local computed = crc32c_value(crc32c_update(CRC_START, raw, 1, size - CRC_SIZE))
    if computed == uint32_at(raw, size - CRC_SIZE) then
        return nil, nil, computed
    end
    -- The CRC of the first piece, carried on from one candidate size to the
    -- next larger one: once over the bytes in all.
    local crc, done = CRC_START, 0
    local function first_frame_good(s)
        crc = crc32c_update(crc, raw, done + 1, s - CRC_SIZE)
        done = s - CRC_SIZE
        return crc32c_value(crc) == uint32_at(raw, done)
    end
    local s, count = segments(raw, size, SMALLEST, starts_with_prefix, first_frame_good)
    return s, count, computed
end

-- One frame, a whole datagram or a segment of an aggregate (segment: its
-- number, the segments' count and size), in a trioudp tree of its own;
-- returns its Info text. computed: its CRC32C, if known.
local function dissect_frame(tvb, tree, computed, segment)
    local size = tvb:reported_len()
    local root = tree:add(trioudp, tvb())
    local self = setmetatable(
        { tvb = tvb, root = root, size = size, info = {}, problems = {}, computed = computed },
        Frame
    )
    if segment then
        root:add(F.gso_segment_size, segment.size):set_generated()
        root:add(F.gso_segments, segment.count):set_generated()
        root:add(F.gso_segment, segment.number):set_generated()
    end
    if tvb:len() < size then
        partial_header(root, tvb, tvb:len())
        self:note("(cut short by the capture: not dissected)")
    elseif size < SMALLEST then
        partial_header(root, tvb, size)
        self:malformed(root, size .. " bytes is shorter than the " .. SMALLEST .. "-byte smallest frame")
    else
        local magic_item = root:add(F.magic, tvb(0, 2))
        local version_item = root:add(F.version, tvb(2, 1))
        if self:uint(0, 2) ~= 0x7455 then
            self:malformed(magic_item, "wrong magic bytes: not a trioudp frame")
        elseif self:uint(2, 1) ~= 1 then
            self:malformed(version_item, "unsupported frame version " .. self:uint(2, 1))
        else
            self:frame()
        end
    end
    if self.crc_bad then
        self:note("[CRC BAD]")
    end
    if #self.problems > 0 then
        self:note("[MALFORMED: " .. table.concat(self.problems, "; ") .. "]")
    end
    local text = table.concat(self.info, " ")
    root:append_text(", " .. text)
    if segment then
        root:append_text(" [GSO segment " .. segment.number .. " of " .. segment.count .. "]")
    end
    return text
end

local function dissect(tvb, pinfo, tree)
    pinfo.cols.protocol:set("trioudp")
    local size = tvb:reported_len()
    local s, count, computed = aggregate(tvb, size)
    local text
    if s == nil then
        text = dissect_frame(tvb, tree, computed)
    else
        local texts = {}
        for number = 1, count do
            local offset = (number - 1) * s
            local piece = tvb(offset, math.min(s, size - offset)):tvb()
            local segment = { number = number, count = count, size = s }
            texts[number] = dissect_frame(piece, tree, nil, segment)
        end
        text = table.concat(texts, " | ") .. " [GSO " .. count .. " " .. TIMES .. " " .. s .. "]"
    end
    pinfo.cols.info:set(text)
    return size
end

function trioudp.dissector(tvb, pinfo, tree)
    return dissect(tvb, pinfo, tree)
end

-- A datagram of at least 20 bytes with the magic and version 1.
local function heuristic(tvb, pinfo, tree)
    if tvb:reported_len() < SMALLEST or tvb:len() < 3 then
        return false
    end
    if tvb(0, 2):uint() ~= 0x7455 or tvb(2, 1):uint() ~= 1 then
        return false
    end
    dissect(tvb, pinfo, tree)
    return true
end

trioudp.prefs.port = Pref.uint(
    "UDP port",
    0,
    "Decode every datagram to or from this UDP port as trioudp (0: none). "
        .. "Frames on other ports are found by their magic and version."
)

local udp_port = DissectorTable.get("udp.port")
local registered_port = 0

function trioudp.prefs_changed()
    local port = trioudp.prefs.port
    if port > 65535 then
        port = 0
    end
    if port ~= registered_port then
        if registered_port ~= 0 then
            udp_port:remove(registered_port, trioudp)
        end
        if port ~= 0 then
            udp_port:add(port, trioudp)
        end
        registered_port = port
    end
end

udp_port:add_for_decode_as(trioudp)
trioudp:register_heuristic("udp", heuristic)
