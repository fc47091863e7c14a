//! An incremental, depth-aware JSON tokenizer that validates without building a tree.
//!
//! The three parsers in this module need a handful of values at known shallow paths out
//! of bodies that can be megabytes long and arrive in arbitrary pieces. The tokenizer
//! takes the bytes in any split, keeps a fixed-size state (no recursion, no allocation),
//! and tells a [`Visitor`] about each token together with its path from the top-level
//! value. Strings are only decoded for the visitor when it asks, so the bulk of a body
//! (message text, tool schemas) is validated at memory speed and forgotten. Nothing at
//! or under a key the visitor does not recognise is reported either: every visitor here
//! reads a few known paths, and the rest of a body (ids, stop reasons, tool inputs) is
//! only validated, with no call per token.
//!
//! Validation follows RFC 8259 and matches serde_json on what it rejects: bad UTF-8,
//! control bytes in strings, lone surrogate escapes, leading zeros, trailing garbage, and
//! nesting deeper than serde_json's limit. One difference: numbers are checked for
//! grammar only, so a float too large for f64 (`1e400`) is accepted here.

use crate::scan;

/// Deepest nesting accepted; serde_json refuses the 128th level too.
pub const MAX_DEPTH: usize = 127;

/// `Tokenizer::other_at` when every level of the path is reported.
const NO_OTHER: usize = usize::MAX;

/// Levels of path reported to visitors; tokens deeper down are validated, not reported.
pub const MAX_PATH: usize = 6;

/// Longest key, in decoded bytes, that a visitor can recognise; no key of interest is
/// longer, so longer keys simply become [`Seg::Other`].
const KEY_CAP: usize = 32;

/// One step of the path from the top-level value down to a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg<K> {
    /// An element of an array (which one is not tracked).
    Elem,
    /// A member of an object under a key the visitor recognised.
    Key(K),
    /// A member of an object under any other key.
    Other,
}

/// The two kinds of JSON container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    /// `{ … }`
    Object,
    /// `[ … ]`
    Array,
}

/// What the tokenizer reports, with the path of the value it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token<'a> {
    /// A key was read: the path now ends in it and its value comes next.
    Key,
    /// A container begins; the path is the container's own.
    Begin(Container),
    /// A container ends; the path is the container's own.
    End(Container),
    /// A string value begins.
    StrBegin,
    /// Decoded bytes of the current string value, sent only if the visitor asked for
    /// them; a piece may end inside a UTF-8 sequence that the next piece completes.
    Str(&'a [u8]),
    /// The current string value ended.
    StrEnd,
    /// A number: its value if it is a non-negative integer that fits a u64 (as
    /// serde_json's `as_u64` would see it), else `None`.
    Num(Option<u64>),
    /// `true` or `false`.
    Bool(bool),
    /// `null`.
    Null,
}

/// Receives the tokens of a document at depth up to [`MAX_PATH`] whose paths hold no
/// [`Seg::Other`]: a key the visitor does not recognise is not reported, and neither is
/// anything in its value.
pub trait Visitor {
    /// The keys this visitor recognises.
    type Key: Copy + Eq;

    /// Recognises a decoded key; `None` makes it [`Seg::Other`].
    fn key(&self, name: &[u8]) -> Option<Self::Key>;

    /// Takes one token found at `path`.
    fn token(&mut self, path: &[Seg<Self::Key>], token: Token<'_>);

    /// Whether the string value starting at `path` should be decoded into `Str` tokens.
    fn wants_string(&mut self, _path: &[Seg<Self::Key>]) -> bool {
        false
    }

    /// Takes a string value that lay whole in one piece with nothing to decode: the
    /// same as `StrBegin`, then `Str(text)` if `wants_string` and `text` is not empty,
    /// then `StrEnd`. A visitor that only collects strings does it in one call.
    fn whole_string(&mut self, path: &[Seg<Self::Key>], text: &[u8]) {
        self.token(path, Token::StrBegin);
        if !text.is_empty() && self.wants_string(path) {
            self.token(path, Token::Str(text));
        }
        self.token(path, Token::StrEnd);
    }

    /// Whether the raw bytes of the container starting at `path` should go to [`Self::raw`].
    fn wants_raw(&mut self, _path: &[Seg<Self::Key>]) -> bool {
        false
    }

    /// Takes the next raw bytes of the container asked for with `wants_raw`, brackets
    /// included, as they arrive.
    fn raw(&mut self, _bytes: &[u8]) {}
}

/// Where in the grammar the tokenizer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// A value must come next.
    Value,
    /// Just after `[`: a value or `]`.
    ArrayFirst,
    /// Just after `{`: a key or `}`.
    ObjectFirst,
    /// After a `,` in an object: a key.
    KeyStart,
    /// After a key: `:`.
    Colon,
    /// After a value inside a container: `,` or the closing bracket.
    After,
    /// Inside a string (a key or a value).
    Str,
    /// Inside a number.
    Num,
    /// Inside `true`, `false` or `null`.
    Lit,
    /// The top-level value is complete; only whitespace may follow.
    Done,
    /// The input is not JSON; everything after is ignored.
    Failed,
}

/// Progress through a backslash escape.
#[derive(Debug, Clone, Copy)]
enum Escape {
    None,
    Backslash,
    /// Inside `\uXXXX`; `high` is the pending high surrogate when this is its partner.
    Hex {
        digits: u8,
        unit: u32,
        high: Option<u32>,
    },
    /// A high surrogate was read; its low half must follow as `\uXXXX`.
    LowBackslash(u32),
    LowU(u32),
}

/// Progress through a number, per the RFC 8259 grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NumPhase {
    Start,
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    Exp,
    ExpSign,
    ExpDigits,
}

/// The tokenizer's whole state: a few dozen bytes, whatever the input.
#[derive(Debug, Clone)]
pub struct Tokenizer<K> {
    state: State,
    depth: usize,
    /// Bit `d` is set when the container at level `d` is an object.
    objects: u128,
    /// The innermost open container is an object (`objects`' top bit, kept at hand: a
    /// variable u128 shift per comma showed in profiles).
    top_object: bool,
    path: [Seg<K>; MAX_PATH],
    /// The shallowest level whose segment is [`Seg::Other`] (`NO_OTHER` if none): tokens
    /// at or below it are not reported. Always below `depth` or `NO_OTHER`.
    other_at: usize,
    in_key: bool,
    deliver: bool,
    escape: Escape,
    /// Continuation bytes still owed by the current UTF-8 sequence, and the range the
    /// next one must fall in (narrower than 80..BF after some lead bytes).
    utf8_need: u8,
    utf8_lo: u8,
    utf8_hi: u8,
    key: [u8; KEY_CAP],
    /// Decoded key length; `KEY_CAP + 1` marks a key too long to recognise.
    key_len: usize,
    phase: NumPhase,
    negative: bool,
    fraction: bool,
    overflow: bool,
    value: u64,
    literal: &'static [u8],
    literal_pos: usize,
    /// While a raw capture runs: the depth at which it ends.
    raw_until: Option<usize>,
}

impl<K: Copy + Eq> Default for Tokenizer<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Copy + Eq> Tokenizer<K> {
    /// A tokenizer at the start of a document.
    pub fn new() -> Self {
        Tokenizer {
            state: State::Value,
            depth: 0,
            objects: 0,
            top_object: false,
            path: [Seg::Other; MAX_PATH],
            other_at: NO_OTHER,
            in_key: false,
            deliver: false,
            escape: Escape::None,
            utf8_need: 0,
            utf8_lo: 0,
            utf8_hi: 0,
            key: [0; KEY_CAP],
            key_len: 0,
            phase: NumPhase::Start,
            negative: false,
            fraction: false,
            overflow: false,
            value: 0,
            literal: b"",
            literal_pos: 0,
            raw_until: None,
        }
    }

    /// Starts over at the beginning of a new document.
    pub fn reset(&mut self) {
        self.state = State::Value;
        self.depth = 0;
        self.other_at = NO_OTHER;
        self.escape = Escape::None;
        self.utf8_need = 0;
        self.raw_until = None;
    }

    /// Whether the input so far is already known not to be JSON.
    pub fn failed(&self) -> bool {
        self.state == State::Failed
    }

    /// Takes the next bytes of the document, reporting tokens to `v`.
    pub fn feed<V: Visitor<Key = K>>(&mut self, s: &[u8], v: &mut V) {
        // A capture that began in an earlier piece continues from this piece's start.
        let mut raw_from = 0;
        let mut i = 0;
        while i < s.len() {
            i = match self.state {
                State::Str => self.string(s, i, v),
                State::Num => self.number(s, i, v),
                State::Lit => self.literal(s, i, v),
                State::Failed => return,
                _ => {
                    i += scan::whitespace_run(&s[i..]);
                    if i == s.len() {
                        break;
                    }
                    self.structural(s, i, v, &mut raw_from)
                }
            };
        }
        if self.raw_until.is_some() && raw_from < s.len() {
            v.raw(&s[raw_from..]);
        }
    }

    /// Ends the document: true if it held exactly one complete JSON value.
    pub fn finish<V: Visitor<Key = K>>(&mut self, v: &mut V) -> bool {
        // Only a number has no closing byte of its own.
        if self.state == State::Num
            && matches!(
                self.phase,
                NumPhase::Zero | NumPhase::Int | NumPhase::Frac | NumPhase::ExpDigits
            )
        {
            self.end_number(v);
        }
        self.state == State::Done
    }

    fn fail(&mut self) -> usize {
        self.state = State::Failed;
        self.raw_until = None;
        usize::MAX
    }

    /// The path of the current position, if it is reported: shallow enough, and under
    /// recognised keys only.
    fn path(&self) -> Option<&[Seg<K>]> {
        if self.other_at < self.depth {
            return None;
        }
        self.path.get(..self.depth)
    }

    /// Whether the key being read at level `depth - 1` is looked up: it is when it lies
    /// within the reported path's reach and no key above it went unrecognised.
    fn key_matters(&self) -> bool {
        self.depth <= MAX_PATH && (self.other_at == NO_OTHER || self.other_at + 1 >= self.depth)
    }

    fn value_done(&mut self) {
        self.state = if self.depth == 0 {
            State::Done
        } else {
            State::After
        };
    }

    /// Handles significant bytes outside strings, numbers and literals, with the tokens
    /// they start; returns where it stopped.
    fn structural<V: Visitor<Key = K>>(
        &mut self,
        s: &[u8],
        mut i: usize,
        v: &mut V,
        raw_from: &mut usize,
    ) -> usize {
        // Token after token, for as long as the next byte is significant and in this
        // piece: compact JSON goes through here without a turn of the feed loop.
        loop {
            i = self.structural_byte(s, i, v, raw_from);
            let more = matches!(
                self.state,
                State::Value
                    | State::ArrayFirst
                    | State::ObjectFirst
                    | State::KeyStart
                    | State::Colon
                    | State::After
            );
            match s.get(i) {
                Some(&b) if more && !scan::is_json_whitespace(b) => {}
                _ => return i,
            }
        }
    }

    /// Handles the significant byte at `s[i]` and the token it starts.
    #[inline(always)]
    fn structural_byte<V: Visitor<Key = K>>(
        &mut self,
        s: &[u8],
        i: usize,
        v: &mut V,
        raw_from: &mut usize,
    ) -> usize {
        let b = s[i];
        match self.state {
            State::Value | State::ArrayFirst => match b {
                b']' if self.state == State::ArrayFirst => {
                    self.close(Container::Array, s, i, v, raw_from)
                }
                b'{' => self.open(Container::Object, i, v, raw_from),
                b'[' => self.open(Container::Array, i, v, raw_from),
                // Each token is read on at once rather than on the next turn of the
                // feed loop: one state dispatch per token instead of two.
                b'"' => {
                    if let Some(end) = self.whole_value_string(s, i + 1, v) {
                        return end;
                    }
                    // Not plain, or not whole in this piece: the general loop (the inline
                    // path of `string` would only search the same bytes again).
                    self.start_string(false, v);
                    self.string_slow(s, i + 1, v)
                }
                b'-' | b'0'..=b'9' => {
                    if let Some(end) = self.whole_integer(s, i, v) {
                        return end;
                    }
                    self.state = State::Num;
                    self.phase = NumPhase::Start;
                    self.negative = false;
                    self.fraction = false;
                    self.overflow = false;
                    self.value = 0;
                    self.number(s, i, v)
                }
                b't' | b'f' | b'n' => {
                    self.literal = match b {
                        b't' => b"true",
                        b'f' => b"false",
                        _ => b"null",
                    };
                    self.literal_pos = 0;
                    self.state = State::Lit;
                    self.literal(s, i, v)
                }
                _ => self.fail(),
            },
            State::ObjectFirst | State::KeyStart => match b {
                b'}' if self.state == State::ObjectFirst => {
                    self.close(Container::Object, s, i, v, raw_from)
                }
                b'"' => {
                    self.start_string(true, v);
                    self.string(s, i + 1, v)
                }
                _ => self.fail(),
            },
            State::Colon if b == b':' => {
                self.state = State::Value;
                i + 1
            }
            State::After => match b {
                // The next member's key, when it follows the comma directly: read on
                // at once, without a turn of the structural loop for the comma alone.
                b',' if self.top_object && s.get(i + 1) == Some(&b'"') => {
                    self.start_string(true, v);
                    self.string(s, i + 2, v)
                }
                // The next element, when it is an object right after the comma.
                b',' if !self.top_object && s.get(i + 1) == Some(&b'{') => {
                    self.open(Container::Object, i + 1, v, raw_from)
                }
                b',' => {
                    self.state = if self.top_object {
                        State::KeyStart
                    } else {
                        State::Value
                    };
                    i + 1
                }
                b'}' if self.top_object => self.close(Container::Object, s, i, v, raw_from),
                b']' if !self.top_object => self.close(Container::Array, s, i, v, raw_from),
                _ => self.fail(),
            },
            _ => self.fail(),
        }
    }

    fn open<V: Visitor<Key = K>>(
        &mut self,
        kind: Container,
        i: usize,
        v: &mut V,
        raw_from: &mut usize,
    ) -> usize {
        if self.depth == MAX_DEPTH {
            return self.fail();
        }
        if let Some(path) = self.path() {
            v.token(path, Token::Begin(kind));
            if self.raw_until.is_none() && v.wants_raw(path) {
                self.raw_until = Some(self.depth);
                *raw_from = i;
            }
        }
        let bit = 1u128 << self.depth;
        match kind {
            Container::Object => self.objects |= bit,
            Container::Array => self.objects &= !bit,
        }
        if let Some(seg) = self.path.get_mut(self.depth) {
            *seg = match kind {
                Container::Object => Seg::Other,
                Container::Array => Seg::Elem,
            };
        }
        self.depth += 1;
        self.top_object = kind == Container::Object;
        self.state = match kind {
            Container::Object => State::ObjectFirst,
            Container::Array => State::ArrayFirst,
        };
        i + 1
    }

    fn close<V: Visitor<Key = K>>(
        &mut self,
        kind: Container,
        s: &[u8],
        i: usize,
        v: &mut V,
        raw_from: &mut usize,
    ) -> usize {
        self.depth -= 1;
        self.top_object = self.depth > 0 && self.objects >> (self.depth - 1) & 1 == 1;
        if self.other_at >= self.depth {
            // The level that held the unrecognised key is gone.
            self.other_at = NO_OTHER;
        }
        if let Some(path) = self.path() {
            v.token(path, Token::End(kind));
        }
        if self.raw_until == Some(self.depth) {
            v.raw(&s[*raw_from..=i]);
            self.raw_until = None;
        }
        self.value_done();
        i + 1
    }

    fn start_string<V: Visitor<Key = K>>(&mut self, key: bool, v: &mut V) {
        self.state = State::Str;
        self.in_key = key;
        self.escape = Escape::None;
        self.utf8_need = 0;
        if key {
            self.key_len = 0;
        } else if let Some(path) = self.path() {
            v.token(path, Token::StrBegin);
            self.deliver = v.wants_string(path);
        } else {
            self.deliver = false;
        }
    }

    /// Passes on decoded string bytes: into the key buffer, or to the visitor.
    fn emit<V: Visitor<Key = K>>(&mut self, piece: &[u8], v: &mut V) {
        if self.in_key {
            // Keys that are never looked up are not kept either.
            if self.key_matters() {
                let end = self.key_len + piece.len();
                if end <= KEY_CAP {
                    self.key[self.key_len..end].copy_from_slice(piece);
                    self.key_len = end;
                } else {
                    self.key_len = KEY_CAP + 1;
                }
            }
        } else if self.deliver {
            v.token(&self.path[..self.depth], Token::Str(piece));
        }
    }

    /// Ends the current string (a value, or a key from the key buffer).
    fn end_string<V: Visitor<Key = K>>(&mut self, v: &mut V) {
        if !self.in_key {
            if let Some(path) = self.path() {
                v.token(path, Token::StrEnd);
            }
            self.value_done();
            return;
        }
        self.end_key(None, v);
    }

    /// Ends a key: looks it up and sets the path for its value. `whole` is a key read in
    /// one piece with no escapes, looked up where it lies instead of in the key buffer.
    #[inline(always)]
    fn end_key<V: Visitor<Key = K>>(&mut self, whole: Option<&[u8]>, v: &mut V) {
        if self.key_matters() {
            let name = match whole {
                // As through the buffer: a key longer than it holds is never recognised.
                Some(name) => Some(name).filter(|name| name.len() <= KEY_CAP),
                None => self.key.get(..self.key_len),
            };
            let level = self.depth - 1;
            match name.and_then(|name| v.key(name)) {
                Some(key) => {
                    self.path[level] = Seg::Key(key);
                    self.other_at = NO_OTHER;
                    v.token(&self.path[..self.depth], Token::Key);
                }
                None => {
                    self.path[level] = Seg::Other;
                    self.other_at = level;
                }
            }
        }
        self.state = State::Colon;
    }

    /// Reads a non-negative integer that ends inside `s` (every token count is one) in
    /// one loop instead of the per-byte number grammar; `None` for anything else (signs,
    /// fractions, exponents, leading zeros, 20 digits or more, a number cut by the piece).
    #[inline(always)]
    fn whole_integer<V: Visitor<Key = K>>(
        &mut self,
        s: &[u8],
        i: usize,
        v: &mut V,
    ) -> Option<usize> {
        let digits = s[i..]
            .iter()
            .take(20)
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits == 0 || digits > 19 || (digits > 1 && s[i] == b'0') {
            return None;
        }
        let end = i + digits;
        if matches!(s.get(end), None | Some(b'.' | b'e' | b'E')) {
            return None;
        }
        // At most 19 digits: below u64::MAX, no overflow.
        let value = s[i..end]
            .iter()
            .fold(0u64, |n, &b| n * 10 + u64::from(b - b'0'));
        if let Some(path) = self.path() {
            v.token(path, Token::Num(Some(value)));
        }
        self.value_done();
        Some(end)
    }

    /// Takes the `:` after a key at once when it follows it directly (the usual case).
    #[inline(always)]
    fn colon(&mut self, s: &[u8], i: usize) -> usize {
        if self.state == State::Colon && s.get(i) == Some(&b':') {
            self.state = State::Value;
            return i + 1;
        }
        i
    }

    /// Reads the value right after a key's colon when it is a whole plain string or a
    /// whole integer (most values in API bodies), without a turn of the structural loop;
    /// `None` leaves it to that loop.
    #[inline(always)]
    fn plain_value<V: Visitor<Key = K>>(&mut self, s: &[u8], i: usize, v: &mut V) -> Option<usize> {
        if self.state != State::Value {
            return None;
        }
        match s.get(i)? {
            b'"' => self.whole_value_string(s, i + 1, v),
            b'0'..=b'9' => self.whole_integer(s, i, v),
            _ => None,
        }
    }

    /// Reads a string value that starts at `i` and ends in this piece with nothing to
    /// decode (plain ASCII, no escapes) in one step and one visitor call; `None` for
    /// anything else. Three calls per string value (begin, text, end) and the
    /// `wants_string` question took ~70 instructions more (W1's response body).
    #[inline(always)]
    fn whole_value_string<V: Visitor<Key = K>>(
        &mut self,
        s: &[u8],
        i: usize,
        v: &mut V,
    ) -> Option<usize> {
        let rest = s.get(i..)?;
        let n = scan::plain_string_run_near(rest);
        if rest.get(n) != Some(&b'"') {
            return None;
        }
        if let Some(path) = self.path() {
            v.whole_string(path, &rest[..n]);
        }
        self.value_done();
        Some(i + n + 1)
    }

    /// Scans string bytes from `i`; returns where it stopped.
    #[inline(always)]
    fn string<V: Visitor<Key = K>>(&mut self, s: &[u8], i: usize, v: &mut V) -> usize {
        // Most strings are plain ASCII and end in the piece they start in: take those in
        // one search, inline (~110 instructions per string through the general loop).
        if matches!(self.escape, Escape::None) && self.utf8_need == 0 {
            if let Some(rest) = s.get(i..) {
                // (A run that goes on past NEAR leaves the string to the general loop.)
                let n = scan::plain_string_run_near(rest);
                if rest.get(n) == Some(&b'"') {
                    let piece = &rest[..n];
                    let end = i + n + 1;
                    if self.in_key {
                        if self.key_len == 0 {
                            self.end_key(Some(piece), v);
                        } else {
                            self.emit(piece, v);
                            self.end_key(None, v);
                        }
                        let at = self.colon(s, end);
                        return self.plain_value(s, at, v).unwrap_or(at);
                    }
                    if n > 0 {
                        self.emit(piece, v);
                    }
                    self.end_string(v);
                    return end;
                }
            }
        }
        self.string_slow(s, i, v)
    }

    /// The general string loop: escapes, UTF-8, strings split across pieces.
    #[inline(never)]
    fn string_slow<V: Visitor<Key = K>>(&mut self, s: &[u8], mut i: usize, v: &mut V) -> usize {
        while let Some(&b) = s.get(i) {
            match self.escape {
                Escape::None => {
                    let start = i;
                    loop {
                        if self.utf8_need > 0 {
                            let Some(&c) = s.get(i) else { break };
                            if c < self.utf8_lo || c > self.utf8_hi {
                                return self.fail();
                            }
                            self.utf8_need -= 1;
                            self.utf8_lo = 0x80;
                            self.utf8_hi = 0xBF;
                            i += 1;
                            continue;
                        }
                        i += scan::plain_string_run(&s[i..]);
                        match s.get(i) {
                            Some(&c) if c >= 0x80 => {
                                if !self.utf8_lead(c) {
                                    return self.fail();
                                }
                                i += 1;
                            }
                            _ => break,
                        }
                    }
                    if i > start {
                        self.emit(&s[start..i], v);
                    }
                    match s.get(i) {
                        None => return i,
                        Some(b'"') => {
                            self.end_string(v);
                            return self.colon(s, i + 1);
                        }
                        Some(b'\\') => {
                            self.escape = Escape::Backslash;
                            i += 1;
                        }
                        // A raw control byte.
                        Some(_) => return self.fail(),
                    }
                }
                Escape::Backslash => {
                    i += 1;
                    let out = match b {
                        b'"' | b'\\' | b'/' => b,
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'u' => {
                            self.escape = Escape::Hex {
                                digits: 0,
                                unit: 0,
                                high: None,
                            };
                            continue;
                        }
                        _ => return self.fail(),
                    };
                    self.escape = Escape::None;
                    self.emit(&[out], v);
                }
                Escape::Hex { digits, unit, high } => {
                    i += 1;
                    let Some(d) = (b as char).to_digit(16) else {
                        return self.fail();
                    };
                    let unit = unit << 4 | d;
                    if digits < 3 {
                        self.escape = Escape::Hex {
                            digits: digits + 1,
                            unit,
                            high,
                        };
                        continue;
                    }
                    let code = match high {
                        None if (0xD800..=0xDBFF).contains(&unit) => {
                            self.escape = Escape::LowBackslash(unit);
                            continue;
                        }
                        Some(h) if is_low(unit) => 0x10000 + ((h - 0xD800) << 10) + (unit - 0xDC00),
                        // A low surrogate alone, or a high one without its partner.
                        Some(_) => return self.fail(),
                        None if is_low(unit) => return self.fail(),
                        None => unit,
                    };
                    let Some(c) = char::from_u32(code) else {
                        return self.fail();
                    };
                    self.escape = Escape::None;
                    let mut buf = [0; 4];
                    self.emit(c.encode_utf8(&mut buf).as_bytes(), v);
                }
                Escape::LowBackslash(high) if b == b'\\' => {
                    i += 1;
                    self.escape = Escape::LowU(high);
                }
                Escape::LowU(high) if b == b'u' => {
                    i += 1;
                    self.escape = Escape::Hex {
                        digits: 0,
                        unit: 0,
                        high: Some(high),
                    };
                }
                Escape::LowBackslash(_) | Escape::LowU(_) => return self.fail(),
            }
        }
        i
    }

    /// Checks a UTF-8 lead byte and records what its continuation bytes must be.
    fn utf8_lead(&mut self, b: u8) -> bool {
        let (need, lo, hi) = match b {
            0xC2..=0xDF => (1, 0x80, 0xBF),
            0xE0 => (2, 0xA0, 0xBF),
            0xE1..=0xEC | 0xEE..=0xEF => (2, 0x80, 0xBF),
            // Excludes the UTF-16 surrogates.
            0xED => (2, 0x80, 0x9F),
            // Excludes overlong four-byte forms and code points above U+10FFFF.
            0xF0 => (3, 0x90, 0xBF),
            0xF1..=0xF3 => (3, 0x80, 0xBF),
            0xF4 => (3, 0x80, 0x8F),
            _ => return false,
        };
        self.utf8_need = need;
        self.utf8_lo = lo;
        self.utf8_hi = hi;
        true
    }

    /// Scans number bytes from `i`; returns where it stopped.
    fn number<V: Visitor<Key = K>>(&mut self, s: &[u8], mut i: usize, v: &mut V) -> usize {
        use NumPhase::*;
        while let Some(&b) = s.get(i) {
            self.phase = match (self.phase, b) {
                (Start, b'-') => {
                    self.negative = true;
                    Minus
                }
                (Start | Minus, b'0') => Zero,
                (Start | Minus | Int, b'0'..=b'9') => {
                    let digit = u64::from(b - b'0');
                    match self
                        .value
                        .checked_mul(10)
                        .and_then(|x| x.checked_add(digit))
                    {
                        Some(x) => self.value = x,
                        None => self.overflow = true,
                    }
                    Int
                }
                (Zero | Int, b'.') => {
                    self.fraction = true;
                    Dot
                }
                (Zero | Int | Frac, b'e' | b'E') => {
                    self.fraction = true;
                    Exp
                }
                (Dot | Frac, b'0'..=b'9') => Frac,
                (Exp, b'+' | b'-') => ExpSign,
                (Exp | ExpSign | ExpDigits, b'0'..=b'9') => ExpDigits,
                // The byte after a complete number belongs to what follows it.
                (Zero | Int | Frac | ExpDigits, _) => {
                    self.end_number(v);
                    return i;
                }
                _ => return self.fail(),
            };
            i += 1;
        }
        i
    }

    fn end_number<V: Visitor<Key = K>>(&mut self, v: &mut V) {
        if let Some(path) = self.path() {
            let exact = !(self.negative || self.fraction || self.overflow);
            v.token(path, Token::Num(exact.then_some(self.value)));
        }
        self.value_done();
    }

    /// Matches `true`, `false` or `null` from `i`; returns where it stopped.
    fn literal<V: Visitor<Key = K>>(&mut self, s: &[u8], mut i: usize, v: &mut V) -> usize {
        while let (Some(&b), Some(&want)) = (s.get(i), self.literal.get(self.literal_pos)) {
            if b != want {
                return self.fail();
            }
            i += 1;
            self.literal_pos += 1;
        }
        if self.literal_pos == self.literal.len() {
            if let Some(path) = self.path() {
                let token = match self.literal[0] {
                    b't' => Token::Bool(true),
                    b'f' => Token::Bool(false),
                    _ => Token::Null,
                };
                v.token(path, token);
            }
            self.value_done();
        }
        i
    }
}

fn is_low(unit: u32) -> bool {
    (0xDC00..=0xDFFF).contains(&unit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    /// A key type that holds any key up to 32 bytes, so tests can rebuild documents.
    type Name = ([u8; KEY_CAP], u8);

    /// Rebuilds a serde_json `Value` from the tokens; numbers that are not u64 become
    /// the string "<number>".
    #[derive(Default)]
    struct Rebuild {
        stack: Vec<Value>,
        string: Vec<u8>,
        done: Option<Value>,
        tokens: usize,
        raw: Vec<u8>,
        raw_at: Option<Vec<Seg<Name>>>,
    }

    impl Rebuild {
        fn put(&mut self, path: &[Seg<Name>], v: Value) {
            let Some(parent) = self.stack.last_mut() else {
                self.done = Some(v);
                return;
            };
            match (parent, path.last()) {
                (Value::Array(a), Some(Seg::Elem)) => a.push(v),
                (Value::Object(o), Some(Seg::Key((k, n)))) => {
                    o.insert(String::from_utf8(k[..*n as usize].to_vec()).unwrap(), v);
                }
                (p, s) => panic!("value at {s:?} in {p}"),
            }
        }
    }

    impl Visitor for Rebuild {
        type Key = Name;
        fn key(&self, name: &[u8]) -> Option<Name> {
            let mut k = [0; KEY_CAP];
            k[..name.len()].copy_from_slice(name);
            Some((k, name.len() as u8))
        }
        fn token(&mut self, path: &[Seg<Name>], token: Token<'_>) {
            self.tokens += 1;
            match token {
                Token::Key => {}
                Token::Begin(Container::Object) => self.stack.push(Value::Object(Map::new())),
                Token::Begin(Container::Array) => self.stack.push(Value::Array(vec![])),
                Token::End(_) => {
                    let v = self.stack.pop().unwrap();
                    self.put(path, v);
                }
                Token::StrBegin => self.string.clear(),
                Token::Str(piece) => self.string.extend_from_slice(piece),
                Token::StrEnd => {
                    let s = String::from_utf8(std::mem::take(&mut self.string)).unwrap();
                    self.put(path, Value::String(s));
                }
                Token::Num(Some(n)) => self.put(path, Value::from(n)),
                Token::Num(None) => self.put(path, Value::from("<number>")),
                Token::Bool(b) => self.put(path, Value::Bool(b)),
                Token::Null => self.put(path, Value::Null),
            }
        }
        fn wants_string(&mut self, _: &[Seg<Name>]) -> bool {
            true
        }
        fn wants_raw(&mut self, path: &[Seg<Name>]) -> bool {
            self.raw_at.as_deref() == Some(path)
        }
        fn raw(&mut self, bytes: &[u8]) {
            self.raw.extend_from_slice(bytes);
        }
    }

    /// serde_json's view, with non-u64 numbers replaced like `Rebuild` does.
    fn serde_view(v: Value) -> Value {
        match v {
            Value::Number(n) => n.as_u64().map_or(Value::from("<number>"), Value::from),
            Value::Array(a) => Value::Array(a.into_iter().map(serde_view).collect()),
            Value::Object(o) => {
                Value::Object(o.into_iter().map(|(k, v)| (k, serde_view(v))).collect())
            }
            v => v,
        }
    }

    fn run(chunks: &[&[u8]]) -> Option<Value> {
        let mut t = Tokenizer::new();
        let mut r = Rebuild::default();
        for c in chunks {
            t.feed(c, &mut r);
        }
        t.finish(&mut r)
            .then(|| r.done.expect("a complete document has a value"))
    }

    /// Checks the tokenizer against serde_json on `doc`, whole and split in two anywhere.
    fn agrees_with_serde(doc: &[u8]) {
        let expected = serde_json::from_slice::<Value>(doc).ok().map(serde_view);
        assert_eq!(run(&[doc]), expected, "{}", String::from_utf8_lossy(doc));
        for at in 0..=doc.len() {
            let (a, b) = doc.split_at(at);
            assert_eq!(
                run(&[a, b]),
                expected,
                "split at {at}: {}",
                String::from_utf8_lossy(doc)
            );
        }
    }

    #[test]
    fn valid_documents_decode_like_serde() {
        for doc in [
            r#"{}"#,
            r#"[]"#,
            r#" { "a" : [ 1 , 2.5 , -3 , 0 , -0 , 1e5 , 1E-2 , 2.5e+3 , true , false , null ] } "#,
            r#"{"a":{"b":{"c":{"d":{"e":"deep"}}}}}"#,
            r#"["\"\\\/\b\f\n\r\t", "\u0041\u00e9\u4e2d\ud83d\ude00", "é中😀", "\u0000"]"#,
            r#"{"t\u0079pe":"x","type":"y"}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"n":18446744073709551615,"o":18446744073709551616,"p":00.0}"#,
            r#""top-level string""#,
            r#"12345"#,
            r#"-0.5e-7"#,
            r#"true"#,
            r#"null"#,
            "[1]\n\t\r ",
            "\u{7f}",
            "[\"\u{7f}\"]",
        ] {
            agrees_with_serde(doc.as_bytes());
        }
    }

    #[test]
    fn malformed_documents_are_refused_like_serde() {
        let docs: &[&[u8]] = &[
            b"",
            b" ",
            b"{",
            b"[1,2",
            b"{\"a\":1",
            b"{\"a\"",
            b"{\"a\":}",
            b"{\"a\" 1}",
            b"{a:1}",
            b"{'a':1}",
            b"{\"a\":1,}",
            b"[1,]",
            b"[,1]",
            b"[1 2]",
            b"{\"a\":1}}",
            b"{\"a\":1} {}",
            b"{} x",
            b"]",
            b"}",
            b"[}",
            b"{]",
            b"\"unterminated",
            b"\"a\x00b\"",
            b"\"a\nb\"",
            b"\"a\x1fb\"",
            b"\"\\x\"",
            b"\"\\u12\"",
            b"\"\\u12g4\"",
            b"\"\\ud800\"",
            b"\"\\ud800x\"",
            b"\"\\ud800\\n\"",
            b"\"\\ud800\\u0041\"",
            b"\"\\udc00\"",
            b"\"\\ud800\\ud800\"",
            b"\"\xff\"",
            b"\"\xc0\xaf\"",
            b"\"\xc3\"",
            b"\"\xc3(\"",
            b"\"\xe0\x80\xaf\"",
            b"\"\xed\xa0\x80\"",
            b"\"\xf4\x90\x80\x80\"",
            b"\"\xf5\x80\x80\x80\"",
            b"\"\x80\"",
            b"\"\xe2\x82\"",
            b"01",
            b"-",
            b"-a",
            b"1.",
            b"1.e5",
            b".5",
            b"+1",
            b"1e",
            b"1e+",
            b"--1",
            b"tru",
            b"trux",
            b"nul",
            b"nulll",
            b"True",
            b"NaN",
            b"[\"a\"\"b\"]",
            b"{\"a\":1 \"b\":2}",
            b"\xef\xbb\xbf{}",
        ];
        for doc in docs {
            assert!(
                serde_json::from_slice::<Value>(doc).is_err(),
                "serde accepts {doc:?}"
            );
            agrees_with_serde(doc);
        }
    }

    #[test]
    fn nesting_limit_matches_serde_json() {
        for depth in [MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1] {
            let doc = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            let serde_ok = serde_json::from_str::<Value>(&doc).is_ok();
            let mut t = Tokenizer::new();
            let mut r = Rebuild::default();
            t.feed(doc.as_bytes(), &mut r);
            assert_eq!(t.finish(&mut r), serde_ok, "depth {depth}");
            assert_eq!(serde_ok, depth <= MAX_DEPTH);
        }
    }

    #[test]
    fn hundred_thousand_open_brackets_do_not_overflow_the_stack() {
        let mut t = Tokenizer::new();
        let mut r = Rebuild::default();
        t.feed(&[b'['; 100_000], &mut r);
        assert!(t.failed());
        assert!(!t.finish(&mut r));
        let mut t = Tokenizer::new();
        t.feed("{\"a\":".repeat(100_000).as_bytes(), &mut r);
        assert!(t.failed());
    }

    #[test]
    fn numbers_report_u64_values_only() {
        let cases: &[(&str, Option<u64>)] = &[
            ("0", Some(0)),
            ("7", Some(7)),
            ("18446744073709551615", Some(u64::MAX)),
            ("18446744073709551616", None),
            ("99999999999999999999999", None),
            ("-1", None),
            ("-0", None),
            ("1.0", None),
            ("1e2", None),
            ("0e0", None),
        ];
        for (text, want) in cases {
            let doc = format!("[{text}]");
            let got = run(&[doc.as_bytes()]).unwrap();
            let want = want.map_or(Value::from("<number>"), Value::from);
            assert_eq!(got, Value::Array(vec![want]), "{text}");
        }
    }

    #[test]
    fn tokens_deeper_than_the_path_are_not_reported() {
        let mut t = Tokenizer::new();
        let mut r = Rebuild::default();
        let deep = format!("{}1{}", "[".repeat(MAX_PATH + 3), "]".repeat(MAX_PATH + 3));
        t.feed(deep.as_bytes(), &mut r);
        assert!(t.finish(&mut r));
        // The MAX_PATH + 1 outermost arrays begin and end; nothing inside them is seen.
        assert_eq!(r.tokens, 2 * (MAX_PATH + 1));
    }

    #[test]
    fn long_and_escaped_keys() {
        /// The keys reported, and how many values.
        #[derive(Default)]
        struct Keys(Vec<Seg<u8>>, usize);
        impl Visitor for Keys {
            type Key = u8;
            fn key(&self, name: &[u8]) -> Option<u8> {
                match name {
                    b"type" => Some(1),
                    n if n.len() == KEY_CAP => Some(2),
                    _ => None,
                }
            }
            fn token(&mut self, path: &[Seg<u8>], token: Token<'_>) {
                match token {
                    Token::Key => self.0.push(*path.last().unwrap()),
                    Token::Num(_) => self.1 += 1,
                    _ => {}
                }
            }
        }
        let exact = "k".repeat(KEY_CAP);
        let long = "k".repeat(KEY_CAP + 1);
        let doc = format!(
            r#"{{"t\u0079pe":1,"{exact}":2,"{long}":3,"other":{{"type":4}},"typ\"e":5,"type":6}}"#
        );
        for at in 0..=doc.len() {
            let (a, b) = doc.as_bytes().split_at(at);
            let mut t = Tokenizer::new();
            let mut k = Keys::default();
            t.feed(a, &mut k);
            t.feed(b, &mut k);
            assert!(t.finish(&mut k));
            // Unrecognised keys (too long, unknown, escaped into another name) are not
            // reported, nor is anything under them; a recognised key after them is.
            assert_eq!(
                k.0,
                [Seg::Key(1), Seg::Key(2), Seg::Key(1)],
                "split at {at}"
            );
            assert_eq!(k.1, 3, "split at {at}");
        }
    }

    #[test]
    fn raw_capture_spans_pieces() {
        let doc = br#"{"a":[1,{"x":"}]"}, [2]],"b":{"c":[3]}}"#;
        for at in 0..=doc.len() {
            let (x, y) = doc.split_at(at);
            let mut r = Rebuild {
                raw_at: Some(vec![Seg::Key(Rebuild::default().key(b"a").unwrap())]),
                ..Rebuild::default()
            };
            let mut t = Tokenizer::new();
            t.feed(x, &mut r);
            t.feed(y, &mut r);
            assert!(t.finish(&mut r));
            assert_eq!(r.raw, br#"[1,{"x":"}]"}, [2]]"#, "split at {at}");
        }
    }

    #[test]
    fn strings_are_only_decoded_when_asked() {
        struct Counter(usize);
        impl Visitor for Counter {
            type Key = u8;
            fn key(&self, _: &[u8]) -> Option<u8> {
                None
            }
            fn token(&mut self, _: &[Seg<u8>], token: Token<'_>) {
                if let Token::Str(_) = token {
                    self.0 += 1;
                }
            }
        }
        let mut t = Tokenizer::new();
        let mut c = Counter(0);
        t.feed(br#"{"a":"x\ny","b":["z"]}"#, &mut c);
        assert!(t.finish(&mut c));
        assert_eq!(c.0, 0);
    }

    #[test]
    fn reset_starts_a_new_document() {
        let mut t = Tokenizer::new();
        let mut r = Rebuild::default();
        t.feed(b"[1, \"\\u12", &mut r);
        t.reset();
        r = Rebuild::default();
        t.feed(b"[2]", &mut r);
        assert!(t.finish(&mut r));
        assert_eq!(r.done, Some(serde_json::json!([2])));
    }

    /// Arbitrary JSON up to the reported depth, with keys short enough to be recognised.
    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-1e300f64..1e300).prop_map(Value::from),
            any::<String>().prop_map(Value::String),
            "[ -~]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(MAX_PATH as u32 - 1, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec(("[a-z_é]{0,10}", inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    /// Writes `v` as JSON, escaping non-ASCII as `\u` (with surrogate pairs) when asked,
    /// and with whitespace between tokens when asked.
    fn write(v: &Value, escape: bool, spaced: bool, out: &mut String) {
        let ws = if spaced { " \n\t" } else { "" };
        let string = |s: &str, out: &mut String| {
            out.push('"');
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    c if (c as u32) < 0x20 || (escape && !c.is_ascii()) => {
                        let mut units = [0u16; 2];
                        for u in c.encode_utf16(&mut units) {
                            out.push_str(&format!("\\u{u:04x}"));
                        }
                    }
                    c => out.push(c),
                }
            }
            out.push('"');
        };
        match v {
            Value::String(s) => string(s, out),
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(ws);
                    write(x, escape, spaced, out);
                }
                out.push_str(ws);
                out.push(']');
            }
            Value::Object(o) => {
                out.push('{');
                for (i, (k, x)) in o.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(ws);
                    string(k, out);
                    out.push_str(ws);
                    out.push(':');
                    out.push_str(ws);
                    write(x, escape, spaced, out);
                }
                out.push_str(ws);
                out.push('}');
            }
            v => out.push_str(&v.to_string()),
        }
    }

    proptest! {
        #[test]
        fn any_document_in_any_pieces_decodes_like_serde(
            v in value(),
            escape in any::<bool>(),
            spaced in any::<bool>(),
            cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let mut text = String::new();
            write(&v, escape, spaced, &mut text);
            let doc = text.as_bytes();
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(doc.len() + 1)).collect();
            at.sort_unstable();
            let mut pieces = Vec::new();
            let mut from = 0;
            for a in at {
                pieces.push(&doc[from..a]);
                from = a;
            }
            pieces.push(&doc[from..]);
            let expected = serde_view(serde_json::from_slice(doc).unwrap());
            prop_assert_eq!(run(&pieces), Some(expected));
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            doc in prop::collection::vec(any::<u8>(), 0..256),
            at in any::<prop::sample::Index>(),
        ) {
            let (a, b) = doc.split_at(at.index(doc.len() + 1));
            let got = run(&[a, b]);
            if let Ok(v) = serde_json::from_slice::<Value>(&doc) {
                prop_assert_eq!(got, Some(serde_view(v)));
            }
        }
    }
}
