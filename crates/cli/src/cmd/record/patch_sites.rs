//! The patched-sites part of `record`'s summary: the runtime reports each
//! site it counted at least 4 faults at in a MARK at exit (docs/ARCHITECTURE.md,
//! "Patched sites"), `mmiotrace: patch: site 0x…: WHAT, N faults`; the
//! summary gives the totals by outcome and the sites with the most faults
//! (those a faster path would help most).

use std::collections::BTreeMap;

/// Sites shown one by one.
const TOP: usize = 5;

/// One site's report: its process, address, outcome and faults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchSite {
    pub pid: u32,
    pub pc: u64,
    pub what: String,
    pub faults: u64,
}

/// The site a MARK reports, if it is a site report.
pub fn parse(pid: u32, text: &str) -> Option<PatchSite> {
    let rest = text.strip_prefix("mmiotrace: patch: site 0x")?;
    let (pc, rest) = rest.split_once(": ")?;
    let (what, faults) = rest.rsplit_once(", ")?;
    Some(PatchSite {
        pid,
        pc: u64::from_str_radix(pc, 16).ok()?,
        what: what.to_owned(),
        faults: faults.strip_suffix(" faults")?.parse().ok()?,
    })
}

/// The summary's lines (none without reports).
pub fn lines(sites: &[PatchSite]) -> Vec<String> {
    if sites.is_empty() {
        return Vec::new();
    }
    let mut by_what: BTreeMap<&str, usize> = BTreeMap::new();
    for site in sites {
        *by_what.entry(&site.what).or_default() += 1;
    }
    let patched = by_what.remove("patched").unwrap_or(0);
    let mut totals = format!("  patch: {patched} sites patched");
    for (what, count) in &by_what {
        totals.push_str(&format!(", {count} {what}"));
    }
    let mut out = vec![totals];
    let mut hot: Vec<&PatchSite> = sites.iter().collect();
    hot.sort_by(|a, b| b.faults.cmp(&a.faults).then(a.pc.cmp(&b.pc)));
    for site in hot.iter().take(TOP) {
        out.push(format!(
            "    {:#014x}  pid {}  {} faults  {}",
            site.pc, site.pid, site.faults, site.what
        ));
    }
    if sites.len() > TOP {
        out.push(format!("    ... and {} more", sites.len() - TOP));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_parsed_and_other_marks_are_not() {
        assert_eq!(
            parse(7, "mmiotrace: patch: site 0x401a2b: patched, 4 faults"),
            Some(PatchSite {
                pid: 7,
                pc: 0x401a2b,
                what: "patched".to_owned(),
                faults: 4
            })
        );
        let refused = parse(
            7,
            "mmiotrace: patch: site 0x10: not patchable (too short: under 5 bytes), 20 faults",
        )
        .expect("a report");
        assert_eq!(refused.what, "not patchable (too short: under 5 bytes)");
        assert_eq!(refused.faults, 20);
        assert_eq!(parse(7, "case 3"), None);
        assert_eq!(parse(7, "mmiotrace: patch: site 0x10: patched"), None);
    }

    #[test]
    fn totals_by_outcome_then_the_sites_with_most_faults() {
        let site = |pc, what: &str, faults| PatchSite {
            pid: 1,
            pc,
            what: what.to_owned(),
            faults,
        };
        let short = "not patchable (too short: under 5 bytes)";
        let mut sites: Vec<PatchSite> = (0..6).map(|i| site(0x100 + i, "patched", 4)).collect();
        sites.push(site(0x50, short, 9000));
        sites.push(site(0x60, short, 20));
        assert_eq!(
            lines(&sites),
            [
                format!("  patch: 6 sites patched, 2 {short}"),
                format!("    0x000000000050  pid 1  9000 faults  {short}"),
                format!("    0x000000000060  pid 1  20 faults  {short}"),
                "    0x000000000100  pid 1  4 faults  patched".to_owned(),
                "    0x000000000101  pid 1  4 faults  patched".to_owned(),
                "    0x000000000102  pid 1  4 faults  patched".to_owned(),
                "    ... and 3 more".to_owned(),
            ]
        );
        assert!(lines(&[]).is_empty());
    }
}
