//! (being written)
/// Deepest nesting of arrays and objects accepted.
pub const MAX_DEPTH: usize = 256;
