//! Following a console log that is only ever read as "its last N lines": Nova's
//! `os-getConsoleOutput` action (`{"os-getConsoleOutput": {"length": N}}`, compute API
//! reference "Show Console Output") gives no offsets, so to turn successive reads into a
//! stream of new text we match the start of each read against the end of what was already
//! passed on. A read that does not reach back to what was seen asks for a longer one
//! ([`Follow::ReadMore`]) instead of re-reading the whole, growing log every time.

use std::collections::VecDeque;

/// How many complete lines of what was passed on are kept to match a new read against.
const MEMORY: usize = 200;

/// What to do with a read.
#[derive(Debug, PartialEq, Eq)]
pub enum Follow {
    /// The new text (possibly empty), already noted as seen.
    New(String),
    /// The read did not reach back to the text seen last: read `n` lines instead.
    ReadMore(usize),
}

/// The state of one followed log (see the module documentation).
#[derive(Debug)]
pub struct LogFollower {
    /// The last complete lines passed on, each with its '\n'.
    tail: VecDeque<String>,
    /// A last line passed on without its '\n' yet (it may still grow).
    partial: String,
    /// Lines asked for in the next read.
    window: usize,
    min_window: usize,
    max_window: usize,
    started: bool,
}

impl LogFollower {
    /// A follower that reads `min_window` lines at a time and at most `max_window`.
    pub fn new(min_window: usize, max_window: usize) -> Self {
        Self {
            tail: VecDeque::new(),
            partial: String::new(),
            window: min_window.max(1),
            min_window: min_window.max(1),
            max_window: max_window.max(min_window.max(1)),
            started: false,
        }
    }

    /// How many lines the next read should ask for.
    pub fn window(&self) -> usize {
        self.window
    }

    /// Take a read of the log's last [`Self::window`] lines.
    pub fn take(&mut self, text: &str) -> Follow {
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        let start = if !self.started {
            // The first read: what the log holds now is the console's scrollback.
            Some(0)
        } else {
            match self.overlap(&lines) {
                Some(at) => Some(at),
                // Read as far back as allowed without finding the seen text: either the log
                // grew by more than the window, or it was reset (the instance rebuilt).
                None if self.window < self.max_window && lines.len() >= self.window => {
                    self.window = (self.window * 2).min(self.max_window);
                    return Follow::ReadMore(self.window);
                }
                None => Some(0),
            }
        };
        self.started = true;
        self.window = self.min_window;
        let mut new = String::new();
        let mut rest = &lines[start.unwrap_or(0)..];
        if !self.partial.is_empty() {
            if let Some(first) = rest.first()
                && let Some(more) = first.strip_prefix(self.partial.as_str())
            {
                // The line passed on unfinished has grown: only its new part is new.
                new.push_str(more);
                self.note(first);
                rest = &rest[1..];
            } else {
                self.partial.clear();
            }
        }
        for l in rest {
            new.push_str(l);
            self.note(l);
        }
        Follow::New(new)
    }

    fn note(&mut self, line: &str) {
        if line.ends_with('\n') {
            self.partial.clear();
            if self.tail.len() == MEMORY {
                self.tail.pop_front();
            }
            self.tail.push_back(line.to_owned());
        } else {
            self.partial = line.to_owned();
        }
    }

    /// Where the unseen part of `lines` starts: just after the candidate position whose
    /// preceding lines agree with the seen tail over the longest stretch (ties: the
    /// earliest, so that repeated text is shown again rather than lost). `None` when no
    /// position agrees.
    fn overlap(&self, lines: &[&str]) -> Option<usize> {
        let Some(last) = self.tail.back() else {
            // Nothing complete seen yet: the whole read follows the partial line, if any.
            return Some(0);
        };
        let mut best: Option<(usize, usize)> = None; // (agreeing lines, start)
        for (i, l) in lines.iter().enumerate() {
            if *l != last {
                continue;
            }
            let span = (i + 1).min(self.tail.len());
            let agrees = lines[i + 1 - span..=i]
                .iter()
                .zip(self.tail.iter().skip(self.tail.len() - span))
                .all(|(a, b)| *a == b);
            if agrees && best.is_none_or(|(n, _)| span > n) {
                best = Some((span, i + 1));
            }
        }
        best.map(|(_, start)| start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(f: &mut LogFollower, text: &str) -> String {
        match f.take(text) {
            Follow::New(s) => s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_first_read_is_scrollback_then_only_new_lines() {
        let mut f = LogFollower::new(3, 12);
        assert_eq!(new(&mut f, "a\nb\nc\n"), "a\nb\nc\n");
        assert_eq!(new(&mut f, "b\nc\nd\n"), "d\n");
        assert_eq!(new(&mut f, "b\nc\nd\n"), "");
    }

    #[test]
    fn a_growing_last_line_gives_only_its_new_part() {
        let mut f = LogFollower::new(3, 12);
        assert_eq!(new(&mut f, "boot\nlogin"), "boot\nlogin");
        assert_eq!(new(&mut f, "boot\nlogin: "), ": ");
        assert_eq!(new(&mut f, "boot\nlogin: \nroot\n"), "\nroot\n");
    }

    #[test]
    fn a_read_that_misses_the_seen_text_asks_for_more_then_gives_up_on_a_reset_log() {
        let mut f = LogFollower::new(2, 8);
        new(&mut f, "1\n2\n");
        assert_eq!(f.take("5\n6\n"), Follow::ReadMore(4));
        assert_eq!(f.window(), 4);
        assert_eq!(new(&mut f, "2\n3\n4\n5\n"), "3\n4\n5\n");
        assert_eq!(f.window(), 2, "back to the short read once caught up");
        // A log reset by a rebuild: shorter than the window, so no point reading more.
        assert_eq!(new(&mut f, "fresh boot\n"), "fresh boot\n");
    }

    #[test]
    fn repeated_lines_are_matched_on_the_longest_agreement() {
        let mut f = LogFollower::new(4, 8);
        new(&mut f, "x\nA\nB\n");
        // The log went on "A\nB\n" again: the earlier A B is the one that agrees with x.
        assert_eq!(new(&mut f, "x\nA\nB\nA\n"), "A\n");
        // It went on "B\nA\n": only the start agrees with the seen "…B A", over two lines.
        assert_eq!(new(&mut f, "B\nA\nB\nA\n"), "B\nA\n");
    }
}
