//! Registers of one container that share an address: the check the
//! rules-ng-ng, SVD and TOML loaders share.

use super::*;

/// Registers among `nodes` (one container) that share an address in some
/// variant and some access direction.
pub(crate) fn check_overlaps(db: &Database, nodes: &[Node], unit: u64) -> Vec<Diagnostic> {
    let mut found = Vec::new();
    let mut regs: Vec<(&Node, &Register)> = nodes
        .iter()
        .filter_map(|n| match n.kind {
            NodeKind::Reg(id) => Some((n, &db.regs[id as usize])),
            NodeKind::Block { .. } => None,
        })
        .collect();
    regs.sort_by_key(|(n, _)| n.offset);
    for (i, (a, ra)) in regs.iter().enumerate() {
        let a_span = u64::from(ra.width).div_ceil(unit).max(1);
        let a_end = end_of(a, a_span);
        for (b, rb) in &regs[i + 1..] {
            if b.offset >= a_end {
                break;
            }
            let shares_direction =
                (ra.access.read && rb.access.read) || (ra.access.write && rb.access.write);
            if !shares_direction || !a.variants.intersects(&b.variants) {
                continue;
            }
            let b_span = u64::from(rb.width).div_ceil(unit).max(1);
            if rows_overlap(a, a_span, b, b_span) {
                found.push(Diagnostic {
                    at: rb.at.clone(),
                    message: format!(
                        "register {} at {:#x} overlaps register {} at {:#x} ({})",
                        rb.name,
                        b.offset * unit,
                        ra.name,
                        a.offset * unit,
                        ra.at
                    ),
                });
            }
        }
    }
    found
}

/// One past the last unit of a row of registers (saturating).
fn end_of(node: &Node, span: u64) -> u64 {
    let reps = node.length.max(1) - 1;
    node.offset
        .saturating_add(reps.saturating_mul(node.stride))
        .saturating_add(span)
}

/// Whether some register of row `a` shares a unit with some register of row `b`.
fn rows_overlap(a: &Node, a_span: u64, b: &Node, b_span: u64) -> bool {
    let (few, few_span, many, many_span) = if a.length <= b.length && a.length != 0 {
        (a, a_span, b, b_span)
    } else {
        (b, b_span, a, a_span)
    };
    let count = if few.length == 0 {
        1
    } else {
        few.length.min(1 << 16)
    };
    for k in 0..count {
        let start = few.offset.saturating_add(k.saturating_mul(few.stride));
        let end = start.saturating_add(few_span);
        if hits_row(start, end, many, many_span) {
            return true;
        }
    }
    false
}

/// Whether `[start, end)` shares a unit with some register of `row`.
fn hits_row(start: u64, end: u64, row: &Node, span: u64) -> bool {
    if end <= row.offset {
        return false;
    }
    let first_end = row.offset.saturating_add(span);
    if row.stride == 0 || row.length == 1 {
        return start < first_end;
    }
    // The first repetition that ends after `start`.
    let k = if start >= first_end {
        (start - first_end + 1).div_ceil(row.stride)
    } else {
        0
    };
    if row.length != 0 && k >= row.length {
        return false;
    }
    row.offset.saturating_add(k.saturating_mul(row.stride)) < end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(offset: u64, stride: u64, length: u64) -> Node {
        Node {
            name: None,
            offset,
            stride,
            length,
            variants: VariantSet::all(),
            kind: NodeKind::Reg(0),
        }
    }

    #[test]
    fn interleaved_rows_do_not_overlap() {
        assert!(!rows_overlap(&row(0, 8, 4), 4, &row(4, 8, 4), 4));
        assert!(rows_overlap(&row(0, 8, 4), 4, &row(16, 8, 1), 4));
        assert!(rows_overlap(&row(0, 8, 4), 4, &row(2, 8, 4), 4));
        assert!(!rows_overlap(&row(0, 8, 4), 4, &row(32, 4, 2), 4));
        assert!(rows_overlap(&row(0, 4, 1), 4, &row(0, 4, 1), 4));
    }
}
