//! keysafe volumes: encrypted directories in gocryptfs's open on-disk format, served in the
//! clear through FUSE while their password stays in keysafe; process access rules on the clear
//! view; and LUKS2 disks bound to keys deposited in keysafe. Depends on the client library
//! (deposits are end-to-end encrypted like every other), never on the server.

pub mod format;
pub mod fs;
