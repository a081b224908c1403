//! Fuzzes the edge's request decoder: arbitrary bytes as a POST body, with or without a
//! 2026-07-28 `MCP-Protocol-Version` header, checked by `check_decoder`'s invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let (header, body) = match data.split_first() {
        Some((flag, rest)) if flag & 1 == 1 => (Some("2026-07-28"), rest),
        Some((_, rest)) => (None, rest),
        None => (None, data),
    };
    stateful_mcp::mcp::check_decoder(body, header);
});
