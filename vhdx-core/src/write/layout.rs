//! Where things sit in an image file, and how to pack its blocks (for compaction).
//!
//! A [`Layout`] lists the structures that never move (headers, log, regions, BAT, parent
//! locators) and the movable units (payload blocks, VHDX sector-bitmap blocks, VHD blocks
//! with their bitmaps). [`plan`] packs the units: the highest unit moves into the lowest
//! free gap below it that fits, until none does. Space a moving unit leaves is never reused
//! in the same pass (it lies above every unit still to place anyway), so a crash can never
//! find a block overwritten that the durable BAT still points at.

use crate::error::{Error, Result};
use crate::format::vhd::SECTOR;
use crate::format::vhdx::bat as fb;
use crate::format::vhdx::MIB;
use crate::storage::Storage;
use crate::vhd::Vhd;
use crate::vhdx::Vhdx;

/// One movable unit of an image file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unit {
    /// The BAT index that points at it (VHDX: payload or sector-bitmap entry; VHD: block).
    pub index: u64,
    /// File offset.
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
    /// Whether it is a payload block that a full compaction may scan for zeros.
    pub payload: bool,
}

/// The structures and units of one image file.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Ranges that never move, `(offset, length)`.
    pub fixed: Vec<(u64, u64)>,
    /// The movable units.
    pub units: Vec<Unit>,
    /// Alignment of unit offsets.
    pub align: u64,
    /// Bytes the file needs after its last unit or structure (the VHD footer).
    pub tail: u64,
    /// The file length now.
    pub file_len: u64,
}

impl Layout {
    /// The file length the layout needs: the end of the last structure or unit (VHDX
    /// rounded up to 1 MiB), plus the tail.
    pub fn needed_len(&self) -> u64 {
        let end = self
            .fixed
            .iter()
            .map(|&(o, l)| o + l)
            .chain(self.units.iter().map(|u| u.offset + u.length))
            .max()
            .unwrap_or(0);
        end.div_ceil(self.align) * self.align + self.tail
    }

    /// The free ranges between structures and units, below the end of the last one.
    pub fn gaps(&self) -> Vec<(u64, u64)> {
        let mut taken: Vec<(u64, u64)> = self
            .fixed
            .iter()
            .copied()
            .chain(self.units.iter().map(|u| (u.offset, u.length)))
            .collect();
        taken.sort_unstable();
        let mut gaps = Vec::new();
        let mut pos = 0;
        for (o, l) in taken {
            if o > pos {
                gaps.push((pos, o - pos));
            }
            pos = pos.max(o + l);
        }
        gaps
    }

    /// Checks that no two units or structures overlap and every unit lies inside the file:
    /// compaction moves data around and must not act on a damaged map.
    pub fn validate(&self, name: &'static str) -> Result<()> {
        let mut all: Vec<(u64, u64, bool)> = self
            .fixed
            .iter()
            .map(|&(o, l)| (o, l, false))
            .chain(self.units.iter().map(|u| (u.offset, u.length, true)))
            .collect();
        all.sort_unstable();
        for w in all.windows(2) {
            if w[0].0 + w[0].1 > w[1].0 {
                return Err(Error::corrupt(
                    name,
                    w[1].0,
                    "two blocks or structures overlap; run `vhdx check` before changing the layout",
                )
                .found(format!(
                    "{:#x}+{:#x} and {:#x}+{:#x}",
                    w[0].0, w[0].1, w[1].0, w[1].1
                )));
            }
        }
        if let Some(u) = self
            .units
            .iter()
            .find(|u| u.offset + u.length > self.file_len)
        {
            return Err(Error::corrupt(
                name,
                u.offset,
                "a block lies past the end of the file; run `vhdx check` before changing the layout",
            )
            .found(format!("{:#x}+{:#x}", u.offset, u.length)));
        }
        Ok(())
    }
}

/// The packing of a layout: which unit (by position in `units`) goes where, and the file
/// length afterwards.
pub fn plan(layout: &Layout) -> (Vec<(usize, u64)>, u64) {
    let a = layout.align;
    let mut gaps: Vec<(u64, u64)> = layout
        .gaps()
        .into_iter()
        .map(|(o, l)| {
            let s = o.div_ceil(a) * a;
            (s, (o + l).saturating_sub(s))
        })
        .filter(|&(_, l)| l > 0)
        .collect();
    let mut order: Vec<usize> = (0..layout.units.len()).collect();
    order.sort_unstable_by_key(|&i| std::cmp::Reverse(layout.units[i].offset));
    let mut moves = Vec::new();
    let mut first = 0; // gaps before this one are full
    let mut after = layout.clone();
    for i in order {
        let u = layout.units[i];
        while first < gaps.len() && gaps[first].1 < a {
            first += 1;
        }
        if first >= gaps.len() || gaps[first].0 >= u.offset {
            break;
        }
        let Some(g) = gaps[first..]
            .iter_mut()
            .take_while(|g| g.0 < u.offset)
            .find(|g| g.1 >= u.length && g.0 + u.length <= u.offset)
        else {
            continue;
        };
        moves.push((i, g.0));
        after.units[i].offset = g.0;
        g.0 += u.length;
        g.1 -= u.length;
    }
    (moves, after.needed_len())
}

/// The layout of a VHDX file read through `s`.
pub fn vhdx_layout(v: &Vhdx, s: &dyn Storage) -> Result<Layout> {
    let h = v.header();
    let r = v.regions();
    let mut fixed = vec![
        (0, MIB),
        (h.log_offset.get(), u64::from(h.log_length.get())),
        (r.bat.offset, r.bat.length),
        (r.metadata.offset, r.metadata.length),
    ];
    fixed.extend(r.others.iter().map(|o| (o.offset, o.length)));
    fixed.retain(|&(_, l)| l > 0);
    let bs = u64::from(v.metadata().block_size);
    let cr = v.chunk_ratio();
    let blocks = v.payload_blocks();
    let diff = v.metadata().has_parent;
    let mut units = Vec::new();
    v.bat().for_each(s, u64::MAX, |idx, e| {
        let sb = idx % (cr + 1) == cr;
        let state = fb::entry_state(e);
        let (present, length) = if sb {
            (diff && state == fb::SB_PRESENT, MIB)
        } else {
            let block = idx - idx / (cr + 1);
            let present = block < blocks
                && matches!(
                    state,
                    fb::PAYLOAD_FULLY_PRESENT | fb::PAYLOAD_PARTIALLY_PRESENT
                );
            (present, bs)
        };
        if present {
            units.push(Unit {
                index: idx,
                offset: fb::entry_offset(e),
                length,
                payload: !sb,
            });
        }
        Ok(())
    })?;
    Ok(Layout {
        fixed,
        units,
        align: MIB,
        tail: 0,
        file_len: v.file_len(),
    })
}

/// The layout of a dynamic or differencing VHD read through `s` (`None` for a fixed VHD).
pub fn vhd_layout(v: &Vhd, s: &dyn Storage) -> Result<Option<Layout>> {
    let Some(sp) = v.sparse() else {
        return Ok(None);
    };
    let mut fixed = vec![
        (0, SECTOR),
        (sp.header_offset, 1024),
        (
            sp.bat.offset(),
            (sp.bat.len() * 4).div_ceil(SECTOR) * SECTOR,
        ),
    ];
    for l in sp.header.parent_locators.iter().filter(|l| l.is_used()) {
        fixed.push((l.platform_data_offset.get(), l.data_space_bytes()));
    }
    fixed.retain(|&(_, l)| l > 0);
    let unit_len = sp.bitmap_bytes + u64::from(sp.block_size);
    let mut units = Vec::new();
    sp.bat.for_each(s, sp.blocks, |block, e| {
        if e != crate::format::vhd::dynamic_header::BAT_UNALLOCATED {
            units.push(Unit {
                index: block,
                offset: u64::from(e) * SECTOR,
                length: unit_len,
                payload: true,
            });
        }
        Ok(())
    })?;
    Ok(Some(Layout {
        fixed,
        units,
        align: SECTOR,
        tail: crate::format::vhd::footer::SIZE as u64,
        file_len: v.file_len(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(units: &[(u64, u64)]) -> Layout {
        Layout {
            fixed: vec![(0, 4)],
            units: units
                .iter()
                .enumerate()
                .map(|(i, &(offset, length))| Unit {
                    index: i as u64,
                    offset,
                    length,
                    payload: true,
                })
                .collect(),
            align: 1,
            tail: 0,
            file_len: 100,
        }
    }

    #[test]
    fn packs_the_highest_units_into_the_lowest_gaps() {
        // Gaps at 4..10 and 14..20 and 30..40; units of 2 at 10, 20, 40, 50, 60.
        let l = layout(&[(10, 4), (20, 10), (40, 4), (50, 4), (60, 4)]);
        let (moves, end) = plan(&l);
        // 60 → 4, 50 → 14 (the gap at 4 has 2 left, too small), 40 → 16.
        assert_eq!(moves, vec![(4, 4), (3, 14), (2, 30)]);
        assert_eq!(end, 34);
    }

    #[test]
    fn never_moves_a_unit_upwards_and_stops_when_packed() {
        let l = layout(&[(4, 4), (8, 4)]);
        assert_eq!(plan(&l), (vec![], 12));
        let l = layout(&[(20, 8)]);
        assert_eq!(plan(&l), (vec![(0, 4)], 12));
    }

    #[test]
    fn overlaps_and_blocks_past_the_end_are_refused() {
        assert!(layout(&[(4, 4), (6, 4)]).validate("t").is_err());
        assert!(layout(&[(98, 4)]).validate("t").is_err());
        assert!(layout(&[(4, 4), (8, 4)]).validate("t").is_ok());
    }
}
