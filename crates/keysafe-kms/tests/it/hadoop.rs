//! Interop with the real Hadoop client jars (added below).
