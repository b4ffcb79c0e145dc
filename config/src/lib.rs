//! baton's configuration (schema and validation). Filled in by the
//! configuration issue.
