//! The unit a per-address limit counts: an IPv4 address, or an IPv6 /64 (one host is normally
//! given a whole /64, so keying by the full address would let it pose as 2^64 sources). An
//! IPv4-mapped IPv6 address counts as its IPv4 address.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A source address as limits count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKey {
    V4(Ipv4Addr),
    /// The first 64 bits of the address.
    V6Prefix64(u64),
}

impl SourceKey {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(a) => SourceKey::V4(a),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => SourceKey::V4(v4),
                None => SourceKey::V6Prefix64((a.to_bits() >> 64) as u64),
            },
        }
    }
}

impl From<IpAddr> for SourceKey {
    fn from(ip: IpAddr) -> Self {
        Self::of(ip)
    }
}

impl fmt::Display for SourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceKey::V4(a) => write!(f, "{a}"),
            SourceKey::V6Prefix64(p) => {
                write!(f, "{}/64", Ipv6Addr::from_bits(u128::from(*p) << 64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ipv6_hosts_in_one_slash_64_are_one_source() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(SourceKey::of(a), SourceKey::of(b));
        assert_ne!(SourceKey::of(a), SourceKey::of(c));
        assert_eq!(SourceKey::of(a).to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn ipv4_and_mapped_ipv4_are_the_same_source() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(SourceKey::of(v4), SourceKey::of(mapped));
        assert_ne!(
            SourceKey::of(v4),
            SourceKey::of("192.0.2.8".parse().unwrap())
        );
        assert_eq!(SourceKey::of(v4).to_string(), "192.0.2.7");
    }
}
