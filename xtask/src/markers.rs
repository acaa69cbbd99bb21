//! Judges a serial transcript as it grows: expected markers, forbidden markers, the exit.
//!
//! Markers match in order; a list of substrings is an any-order group that must all appear after
//! the previous marker. Searches never rescan text already ruled out.

use std::process::ExitStatus;
use std::time::Duration;

use serde::Deserialize;

/// One expected piece of serial output.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Marker {
    /// This substring, somewhere after the previous marker.
    Text(String),
    /// Every one of these substrings, in any order, after the previous marker (for output whose
    /// order is not fixed, such as several CPUs reporting at once).
    AnyOrder(Vec<String>),
}

/// How a run must end to pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExitExpectation {
    /// Every marker, then exit status 0 (the image powered the machine off).
    Poweroff,
    /// Every marker, then a non-zero exit status (a panic or fatal exception under semihosting).
    Failure,
    /// Pass as soon as every marker has appeared; the harness then kills the command.
    Markers,
}

/// What a run must show.
#[derive(Debug, Clone)]
pub struct Expectation {
    /// Markers, in order.
    pub markers: Vec<Marker>,
    /// Substrings that fail the run wherever they appear.
    pub forbidden: Vec<String>,
    /// How the run must end.
    pub exit: ExitExpectation,
    /// Wall-clock limit; the command's process group is killed when it passes.
    pub timeout: Duration,
}

/// A substring search over a growing transcript that never rescans text it has already ruled out.
#[derive(Debug)]
struct Search {
    needle: String,
    from: usize,
}

impl Search {
    fn new(needle: &str, from: usize) -> Self {
        Self {
            needle: needle.to_string(),
            from,
        }
    }

    /// The offset just past the first occurrence at or after where the search started.
    fn find(&mut self, text: &[u8]) -> Option<usize> {
        let needle = self.needle.as_bytes();
        let haystack = text.get(self.from..).unwrap_or_default();
        if let Some(position) = find_bytes(haystack, needle) {
            return Some(self.from + position + needle.len());
        }
        // A match could still start in the last needle.len() - 1 bytes.
        let resume = text.len().saturating_sub(needle.len().saturating_sub(1));
        self.from = self.from.max(resume);
        None
    }
}

fn find_bytes(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// How far through the markers the transcript has come.
#[derive(Debug)]
struct Progress {
    markers: Vec<Marker>,
    /// Index of the marker being looked for.
    next: usize,
    /// Where the previous marker ended.
    cursor: usize,
    /// The substrings of the current marker, each with where it ended once found.
    step: Vec<(Search, Option<usize>)>,
}

impl Progress {
    fn new(markers: &[Marker]) -> Self {
        let mut progress = Self {
            markers: markers.to_vec(),
            next: 0,
            cursor: 0,
            step: Vec::new(),
        };
        progress.load_step();
        progress
    }

    fn load_step(&mut self) {
        let cursor = self.cursor;
        self.step = match self.markers.get(self.next) {
            Some(Marker::Text(text)) => vec![(Search::new(text, cursor), None)],
            Some(Marker::AnyOrder(texts)) => texts
                .iter()
                .map(|text| (Search::new(text, cursor), None))
                .collect(),
            None => Vec::new(),
        };
    }

    fn advance(&mut self, text: &[u8]) {
        while !self.complete() {
            for (search, found) in &mut self.step {
                if found.is_none() {
                    *found = search.find(text);
                }
            }
            if self.step.iter().any(|(_, found)| found.is_none()) {
                return;
            }
            let end = self.step.iter().filter_map(|(_, found)| *found).max();
            self.cursor = end.unwrap_or(self.cursor);
            self.next += 1;
            self.load_step();
        }
    }

    fn complete(&self) -> bool {
        self.next >= self.markers.len()
    }

    /// The substrings still missing, for a failure message.
    fn missing(&self) -> String {
        let missing: Vec<String> = self
            .step
            .iter()
            .filter(|(_, found)| found.is_none())
            .map(|(search, _)| format!("`{}`", search.needle))
            .collect();
        missing.join(", ")
    }
}

/// The markers and forbidden markers of one run, checked as the transcript grows.
pub struct Watch {
    progress: Progress,
    forbidden: Vec<Search>,
}

impl Watch {
    /// Nothing seen yet.
    pub fn new(expectation: &Expectation) -> Self {
        Self {
            progress: Progress::new(&expectation.markers),
            forbidden: expectation
                .forbidden
                .iter()
                .map(|text| Search::new(text, 0))
                .collect(),
        }
    }

    /// Look for the next markers in the transcript, which has grown since the last call.
    pub fn observe(&mut self, transcript: &[u8]) {
        self.progress.advance(transcript);
    }

    /// Whether every marker has appeared, in order.
    pub fn all_markers_seen(&self) -> bool {
        self.progress.complete()
    }

    /// The first forbidden marker in the transcript, if any.
    pub fn forbidden_seen(&mut self, text: &[u8]) -> Option<String> {
        self.forbidden
            .iter_mut()
            .find_map(|search| search.find(text).map(|_| search.needle.clone()))
    }

    /// Why a run that hit its timeout failed.
    pub fn timeout_reason(&self, expectation: &Expectation) -> String {
        let seconds = expectation.timeout.as_secs_f64();
        if self.progress.complete() {
            format!(
                "timed out after {seconds:.1}s: every marker appeared but the emulator did not \
                 exit (expected {})",
                describe_exit(expectation.exit)
            )
        } else {
            format!(
                "timed out after {seconds:.1}s waiting for {}",
                self.progress.missing()
            )
        }
    }

    /// The verdict on a run whose command exited: `None` if it passed, else why not.
    pub fn judge_exit(&self, status: ExitStatus, exit: ExitExpectation) -> Option<String> {
        if !self.progress.complete() {
            return Some(format!(
                "emulator exited ({status}) before {} appeared",
                self.progress.missing()
            ));
        }
        match exit {
            ExitExpectation::Poweroff if !status.success() => Some(format!(
                "expected {}, but the emulator exited with {status}",
                describe_exit(exit)
            )),
            ExitExpectation::Failure if status.success() => Some(format!(
                "expected {}, but the emulator exited with {status}",
                describe_exit(exit)
            )),
            ExitExpectation::Poweroff | ExitExpectation::Failure | ExitExpectation::Markers => None,
        }
    }
}

fn describe_exit(exit: ExitExpectation) -> &'static str {
    match exit {
        ExitExpectation::Poweroff => "exit status 0 (power-off)",
        ExitExpectation::Failure => "a non-zero exit status (failure)",
        ExitExpectation::Markers => "the markers",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(markers: &[&str]) -> Vec<Marker> {
        markers
            .iter()
            .map(|marker| Marker::Text(marker.to_string()))
            .collect()
    }

    #[test]
    fn markers_must_come_in_order() {
        let mut progress = Progress::new(&text(&["a1", "b2"]));
        progress.advance(b"b2 then a1");
        assert!(!progress.complete());
        assert_eq!(progress.missing(), "`b2`");
        progress.advance(b"b2 then a1 and b2");
        assert!(progress.complete());
    }

    #[test]
    fn any_order_groups_match_in_any_order_after_the_previous_marker() {
        let markers = vec![
            Marker::Text("start".to_string()),
            Marker::AnyOrder(vec!["cpu 1".to_string(), "cpu 2".to_string()]),
            Marker::Text("done".to_string()),
        ];
        let mut progress = Progress::new(&markers);
        progress.advance(b"cpu 1 early; start; cpu 2; done");
        assert!(!progress.complete(), "cpu 1 came before `start`");
        let mut progress = Progress::new(&markers);
        progress.advance(b"start; cpu 2; cpu 1; done");
        assert!(progress.complete());
    }

    #[test]
    fn searches_find_needles_split_across_chunks() {
        let mut search = Search::new("boot complete", 0);
        let mut text = b"xxxx boot com".to_vec();
        assert_eq!(search.find(&text), None);
        text.extend_from_slice(b"plete\n");
        assert_eq!(search.find(&text), Some(18));
    }
}
