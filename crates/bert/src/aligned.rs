//! Buffers aligned to cache lines. AMX loads and stores tiles by rows of 64 bytes: a row that
//! straddled two lines would double what every load reads (measured: 30 % slower products).

/// A growable buffer whose contents start on a 64-byte boundary. Not cleared when it grows or is
/// reused: every user writes each value before reading it.
#[derive(Default)]
pub(crate) struct Aligned<T> {
    buf: Vec<T>,
    /// Where the aligned part starts in `buf`.
    start: usize,
}

impl<T: Copy + Default> Aligned<T> {
    /// Make room for `len` values.
    pub fn ensure_len(&mut self, len: usize) {
        let slack = 64 / size_of::<T>();
        if self.buf.len() < len + slack {
            self.buf.resize(len + slack, T::default());
        }
        self.start = self.buf.as_ptr().align_offset(64);
    }
}

impl<T> std::ops::Deref for Aligned<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.buf[self.start..]
    }
}

impl<T> std::ops::DerefMut for Aligned<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.buf[self.start..]
    }
}
