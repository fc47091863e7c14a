//! Bounded string buffers: the only places the parsers keep bytes they have read.
//!
//! Every string a parser keeps has a fixed ceiling, so no input can make a stream's
//! state grow. Bytes past the ceiling are dropped and the buffer remembers that it was
//! cut, so a cut value never compares equal to a full one.

/// A string value kept inline, at most `N` bytes: small values (types, names, models)
/// never touch the allocator.
#[derive(Debug, Clone)]
pub(crate) struct Clip<const N: usize> {
    buf: [u8; N],
    len: usize,
    cut: bool,
    set: bool,
}

impl<const N: usize> Clip<N> {
    /// An empty, unset buffer.
    pub(crate) const fn new() -> Self {
        Clip {
            buf: [0; N],
            len: 0,
            cut: false,
            set: false,
        }
    }

    /// Forgets the value: empty and unset, ready for the next one.
    pub(crate) fn clear(&mut self) {
        self.len = 0;
        self.cut = false;
        self.set = false;
    }

    /// Appends bytes, dropping what does not fit.
    pub(crate) fn push(&mut self, piece: &[u8]) {
        let room = N - self.len;
        let take = piece.len().min(room);
        self.buf[self.len..self.len + take].copy_from_slice(&piece[..take]);
        self.len += take;
        self.cut |= take < piece.len();
    }

    /// Marks the value as complete.
    pub(crate) fn finish(&mut self) {
        self.set = true;
    }

    /// Whether the bytes pushed so far are exactly `s` (set or not).
    pub(crate) fn holds(&self, s: &[u8]) -> bool {
        !self.cut && &self.buf[..self.len] == s
    }

    /// Whether bytes were dropped for want of room.
    pub(crate) fn cut(&self) -> bool {
        self.cut
    }

    /// The bytes kept so far: the first `N` of the value.
    pub(crate) fn kept(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The complete value, if one was read and it fitted.
    pub(crate) fn get(&self) -> Option<&[u8]> {
        (self.set && !self.cut).then_some(&self.buf[..self.len])
    }

    /// The complete value, if one was read, cut to `N` bytes on a character boundary.
    pub(crate) fn text(&self) -> Option<&str> {
        self.set.then(|| utf8_prefix(&self.buf[..self.len]))
    }
}

/// A string value kept on the heap up to a ceiling fixed at creation; for the optional
/// texts (assistant text, tool input) whose ceilings are too large to keep inline.
#[derive(Debug, Clone)]
pub(crate) struct Capped {
    buf: Vec<u8>,
    cap: usize,
    set: bool,
}

impl Capped {
    /// An empty buffer that keeps at most `cap` bytes; allocates on first use only.
    pub(crate) const fn new(cap: usize) -> Self {
        Capped {
            buf: Vec::new(),
            cap,
            set: false,
        }
    }

    /// Forgets the value, keeping the allocation for the next one.
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.set = false;
    }

    /// Appends bytes, dropping what does not fit.
    pub(crate) fn push(&mut self, piece: &[u8]) {
        let take = piece.len().min(self.cap - self.buf.len());
        self.buf.extend_from_slice(&piece[..take]);
    }

    /// Marks the value as complete.
    pub(crate) fn finish(&mut self) {
        self.set = true;
    }

    /// The complete value, if one was read, cut on a character boundary.
    pub(crate) fn text(&self) -> Option<&str> {
        self.set.then(|| utf8_prefix(&self.buf))
    }
}

/// A place a string value can be decoded into; lets a visitor pick the buffer by path.
pub(crate) trait Sink {
    /// Forgets any earlier value.
    fn clear(&mut self);
    /// Appends decoded bytes.
    fn push(&mut self, piece: &[u8]);
    /// Marks the value as complete.
    fn finish(&mut self);
}

impl<const N: usize> Sink for Clip<N> {
    fn clear(&mut self) {
        Clip::clear(self)
    }
    fn push(&mut self, piece: &[u8]) {
        Clip::push(self, piece)
    }
    fn finish(&mut self) {
        Clip::finish(self)
    }
}

impl Sink for Capped {
    fn clear(&mut self) {
        Capped::clear(self)
    }
    fn push(&mut self, piece: &[u8]) {
        Capped::push(self, piece)
    }
    fn finish(&mut self) {
        Capped::finish(self)
    }
}

/// Appends as much of `s` to `dst` as keeps `dst` within `cap` bytes, cutting on a
/// character boundary.
pub(crate) fn push_bounded(dst: &mut String, s: &str, cap: usize) {
    let room = cap.saturating_sub(dst.len());
    dst.push_str(utf8_prefix(&s.as_bytes()[..s.len().min(room)]));
}

/// The longest prefix of `bytes` that is valid UTF-8. The tokenizer has validated every
/// string it delivers, so only a cut at the end can break a character.
pub(crate) fn utf8_prefix(bytes: &[u8]) -> &str {
    match std::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_keeps_n_bytes_and_remembers_the_cut() {
        let mut c = Clip::<4>::new();
        assert_eq!(c.get(), None);
        c.push(b"to");
        c.push(b"ol");
        c.finish();
        assert_eq!(c.get(), Some(&b"tool"[..]));
        assert!(c.holds(b"tool"));
        c.clear();
        c.push(b"tool_use");
        c.finish();
        assert_eq!(c.get(), None, "a cut value is not a value");
        assert!(!c.holds(b"tool"));
        assert_eq!(c.text(), Some("tool"));
    }

    #[test]
    fn clip_text_never_splits_a_character() {
        let mut c = Clip::<5>::new();
        c.push("abcdé".as_bytes()); // é is two bytes: only its first fits
        c.finish();
        assert_eq!(c.text(), Some("abcd"));
    }

    #[test]
    fn capped_stops_at_its_ceiling() {
        let mut c = Capped::new(3);
        assert_eq!(c.text(), None);
        c.push(b"ab");
        c.push("éz".as_bytes());
        c.finish();
        assert_eq!(c.text(), Some("ab"));
        c.clear();
        assert_eq!(c.text(), None);
    }

    #[test]
    fn push_bounded_respects_the_ceiling_and_characters() {
        let mut s = String::from("ab");
        push_bounded(&mut s, "cdé", 5);
        assert_eq!(s, "abcd");
        push_bounded(&mut s, "x", 5);
        assert_eq!(s, "abcdx");
        push_bounded(&mut s, "y", 5);
        assert_eq!(s, "abcdx");
        let mut t = String::from("toolong");
        push_bounded(&mut t, "z", 3);
        assert_eq!(t, "toolong");
    }
}
