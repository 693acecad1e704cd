//! "Did you mean …?" for names a user typed: a Nova instance (`baremetal-0` for
//! `baremetal_0`), a fleet-file key. A suggestion is cheap to compute and saves a round trip
//! to the cloud's web console.

/// The names in `candidates` closest to `want`, best first, at most three: those equal once
/// case, `-`/`_`/`.` and spaces are ignored, then those within a small edit distance (two
/// edits, or a quarter of the name's length for long names).
pub fn closest<'a, I>(want: &str, candidates: I) -> Vec<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let norm = |s: &str| -> Vec<char> {
        s.chars()
            .filter(|c| !matches!(c, '-' | '_' | '.' | ' '))
            .flat_map(char::to_lowercase)
            .collect()
    };
    let w = norm(want);
    let limit = 2.max(w.len() / 4);
    let mut scored: Vec<(usize, &str)> = candidates
        .into_iter()
        .filter(|c| *c != want)
        .filter_map(|c| {
            let n = norm(c);
            let d = if n == w { 0 } else { 1 + edit_distance(&w, &n) };
            (d <= limit + 1).then_some((d, c))
        })
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().take(3).map(|(_, c)| c).collect()
}

/// " (did you mean \"a\" or \"b\"?)", or "" when nothing is close.
pub fn did_you_mean<'a, I>(want: &str, candidates: I) -> String
where
    I: IntoIterator<Item = &'a str>,
{
    let c = closest(want, candidates);
    match c.as_slice() {
        [] => String::new(),
        [one] => format!(" (did you mean {one:?}?)"),
        many => {
            let (last, rest) = many.split_last().expect("two or more");
            let rest: Vec<String> = rest.iter().map(|s| format!("{s:?}")).collect();
            format!(" (did you mean {} or {last:?}?)", rest.join(", "))
        }
    }
}

/// Levenshtein distance, two rows.
fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_and_case_are_forgiven_first() {
        let names = ["baremetal_0", "baremetal_1", "undercloud"];
        assert_eq!(
            closest("baremetal-0", names),
            vec!["baremetal_0", "baremetal_1"]
        );
        assert_eq!(closest("BAREMETAL_1", names)[0], "baremetal_1");
        assert_eq!(
            did_you_mean("undercloude", names),
            " (did you mean \"undercloud\"?)"
        );
    }

    #[test]
    fn nothing_close_suggests_nothing() {
        assert_eq!(
            did_you_mean("controller-2", ["baremetal_0", "undercloud"]),
            ""
        );
        assert_eq!(did_you_mean("x", std::iter::empty()), "");
    }

    #[test]
    fn at_most_three_best_first() {
        let names = ["node1", "node2", "node3", "node4", "nodes"];
        let c = closest("node", names);
        assert_eq!(c.len(), 3);
        assert_eq!(
            did_you_mean("node", ["node1", "node2"]),
            " (did you mean \"node1\" or \"node2\"?)"
        );
    }

    #[test]
    fn edit_distance_is_levenshtein() {
        let d = |a: &str, b: &str| {
            edit_distance(
                &a.chars().collect::<Vec<_>>(),
                &b.chars().collect::<Vec<_>>(),
            )
        };
        assert_eq!(d("kitten", "sitting"), 3);
        assert_eq!(d("", "abc"), 3);
        assert_eq!(d("abc", "abc"), 0);
    }
}
