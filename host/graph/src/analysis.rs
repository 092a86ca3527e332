//! Analytics on a graph. Filled in by `analyse`.
