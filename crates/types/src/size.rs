//! Page sizes, byte sizes and cycles.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// An x86-64 page size.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Serialize, Deserialize)]
pub enum PageSize {
    /// 4 KiB, a leaf at level 1 (PT).
    #[serde(rename = "4k")]
    Size4K,
    /// 2 MiB, a leaf at level 2 (PD).
    #[serde(rename = "2m")]
    Size2M,
    /// 1 GiB, a leaf at level 3 (PDPT).
    #[serde(rename = "1g")]
    Size1G,
}

impl PageSize {
    /// All page sizes, smallest first.
    pub const ALL: [PageSize; 3] = [PageSize::Size4K, PageSize::Size2M, PageSize::Size1G];

    /// log2 of the size in bytes.
    #[inline]
    pub const fn shift(self) -> u32 {
        match self {
            PageSize::Size4K => 12,
            PageSize::Size2M => 21,
            PageSize::Size1G => 30,
        }
    }
    /// Size in bytes.
    #[inline]
    pub const fn bytes(self) -> u64 {
        1 << self.shift()
    }
    /// `bytes() - 1`.
    #[inline]
    pub const fn mask(self) -> u64 {
        self.bytes() - 1
    }
    /// The radix level (1 = PT, 2 = PD, 3 = PDPT) at which a leaf of this size sits.
    #[inline]
    pub const fn leaf_level(self) -> u8 {
        match self {
            PageSize::Size4K => 1,
            PageSize::Size2M => 2,
            PageSize::Size1G => 3,
        }
    }
    /// The page size whose leaf sits at `level`, if any.
    pub const fn from_leaf_level(level: u8) -> Option<PageSize> {
        match level {
            1 => Some(PageSize::Size4K),
            2 => Some(PageSize::Size2M),
            3 => Some(PageSize::Size1G),
            _ => None,
        }
    }
    /// Memory references of a walk ending at a leaf of this size in a table of `levels` levels.
    #[inline]
    pub const fn walk_refs(self, levels: u8) -> u8 {
        levels + 1 - self.leaf_level()
    }
    /// Short name: `4k`, `2m`, `1g`.
    pub const fn name(self) -> &'static str {
        match self {
            PageSize::Size4K => "4k",
            PageSize::Size2M => "2m",
            PageSize::Size1G => "1g",
        }
    }
}

impl fmt::Display for PageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PageSize {
    type Err = SizeError;
    fn from_str(s: &str) -> Result<Self, SizeError> {
        match s.to_ascii_lowercase().as_str() {
            "4k" | "4kib" | "4096" => Ok(PageSize::Size4K),
            "2m" | "2mib" => Ok(PageSize::Size2M),
            "1g" | "1gib" => Ok(PageSize::Size1G),
            _ => Err(SizeError::PageSize(s.to_owned())),
        }
    }
}

/// Why a size did not parse.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SizeError {
    /// Not a number followed by an optional unit.
    #[error(
        "malformed size '{0}': expected a number with an optional unit (B, K/KiB, M/MiB, G/GiB, T/TiB), e.g. 4GiB"
    )]
    Malformed(String),
    /// Too large for 64 bits.
    #[error("size '{0}' does not fit in 64 bits")]
    Overflow(String),
    /// Not a page size.
    #[error("unknown page size '{0}': valid values are 4k, 2m, 1g")]
    PageSize(String),
}

/// A number of bytes. Parses `4096`, `4k`, `4KiB`, `512M`, `4GiB`, `1.5G` (binary units).
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// `n` KiB.
    pub const fn kib(n: u64) -> Self {
        ByteSize(n << 10)
    }
    /// `n` MiB.
    pub const fn mib(n: u64) -> Self {
        ByteSize(n << 20)
    }
    /// `n` GiB.
    pub const fn gib(n: u64) -> Self {
        ByteSize(n << 30)
    }
    /// The number of bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = SizeError;
    fn from_str(s: &str) -> Result<Self, SizeError> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let unit = unit.trim().to_ascii_lowercase();
        let shift = match unit.as_str() {
            "" | "b" => 0,
            "k" | "kb" | "kib" => 10,
            "m" | "mb" | "mib" => 20,
            "g" | "gb" | "gib" => 30,
            "t" | "tb" | "tib" => 40,
            _ => return Err(SizeError::Malformed(s.to_owned())),
        };
        if num.is_empty() || num.matches('.').count() > 1 {
            return Err(SizeError::Malformed(s.to_owned()));
        }
        if let Some((int, frac)) = num.split_once('.') {
            // Exact decimal arithmetic: int * 2^shift + frac * 2^shift / 10^len.
            let int: u64 = if int.is_empty() {
                0
            } else {
                int.parse().map_err(|_| SizeError::Overflow(s.to_owned()))?
            };
            if frac.len() > 9 {
                return Err(SizeError::Malformed(s.to_owned()));
            }
            let f: u128 = if frac.is_empty() {
                0
            } else {
                frac.parse()
                    .map_err(|_| SizeError::Malformed(s.to_owned()))?
            };
            let scale = 10u128.pow(u32::try_from(frac.len()).unwrap_or(0));
            let total = (u128::from(int) << shift) + ((f << shift) / scale);
            u64::try_from(total)
                .map(ByteSize)
                .map_err(|_| SizeError::Overflow(s.to_owned()))
        } else {
            let n: u64 = num.parse().map_err(|_| SizeError::Overflow(s.to_owned()))?;
            n.checked_mul(1u64 << shift)
                .map(ByteSize)
                .ok_or_else(|| SizeError::Overflow(s.to_owned()))
        }
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
        for (name, shift) in UNITS {
            if self.0 >= 1 << shift && self.0.is_multiple_of(1 << shift) {
                return write!(f, "{}{}", self.0 >> shift, name);
            }
        }
        write!(f, "{}B", self.0)
    }
}

/// A number of processor cycles.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Cycles(pub u64);

impl std::ops::Add for Cycles {
    type Output = Cycles;
    fn add(self, o: Cycles) -> Cycles {
        Cycles(self.0 + o.0)
    }
}
impl std::ops::AddAssign for Cycles {
    fn add_assign(&mut self, o: Cycles) {
        self.0 += o.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_sizes() {
        assert_eq!("4096".parse::<ByteSize>(), Ok(ByteSize(4096)));
        assert_eq!("4k".parse::<ByteSize>(), Ok(ByteSize::kib(4)));
        assert_eq!("4GiB".parse::<ByteSize>(), Ok(ByteSize::gib(4)));
        assert_eq!("512 MB".parse::<ByteSize>(), Ok(ByteSize::mib(512)));
        assert_eq!("1.5G".parse::<ByteSize>(), Ok(ByteSize(3 << 29)));
        assert!(matches!(
            "4GX".parse::<ByteSize>(),
            Err(SizeError::Malformed(_))
        ));
        assert!(matches!(
            "".parse::<ByteSize>(),
            Err(SizeError::Malformed(_))
        ));
        assert!(matches!(
            "-1".parse::<ByteSize>(),
            Err(SizeError::Malformed(_))
        ));
        assert!(matches!(
            "99999999999T".parse::<ByteSize>(),
            Err(SizeError::Overflow(_))
        ));
        assert_eq!(ByteSize::gib(4).to_string(), "4GiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
    }

    #[test]
    fn page_sizes() {
        assert_eq!(PageSize::Size2M.bytes(), 2 << 20);
        assert_eq!(PageSize::Size4K.walk_refs(4), 4);
        assert_eq!(PageSize::Size2M.walk_refs(4), 3);
        assert_eq!(PageSize::Size1G.walk_refs(4), 2);
        assert_eq!(PageSize::Size4K.walk_refs(5), 5);
        assert_eq!("2M".parse::<PageSize>(), Ok(PageSize::Size2M));
        assert!("3k".parse::<PageSize>().is_err());
    }
}
