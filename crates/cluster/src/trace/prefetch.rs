//! An event stream read ahead on its own thread: the reader parses the trace in batches on a
//! second core while the engine places the previous batch. The events come out exactly as the
//! wrapped stream yields them, errors included and in place, up to its first `None`.

use super::EventStream;
use crate::event::{Event, VmTraceError};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

type Item = Result<Event, VmTraceError>;

/// Events per batch sent from the reader thread (one channel operation per batch).
const BATCH: usize = 2048;
/// Batches read ahead at most: bounds the memory held by the channel.
const DEPTH: usize = 4;

/// A stream whose items are read ahead by a reader thread; see the module docs. When the thread
/// cannot be started the stream is read on the caller's thread (same items).
pub struct Prefetch {
    state: State,
}

enum State {
    Inline(EventStream),
    Threaded {
        rx: Option<Receiver<Vec<Item>>>,
        batch: std::vec::IntoIter<Item>,
        reader: Option<JoinHandle<()>>,
        ended: bool,
    },
}

impl Prefetch {
    /// Starts reading `inner` ahead on a new thread.
    pub fn new(inner: EventStream) -> Prefetch {
        // The stream is handed over only once the thread runs, so that a failed spawn leaves it
        // here to be read inline.
        let (give, take) = sync_channel::<EventStream>(1);
        let (tx, rx) = sync_channel::<Vec<Item>>(DEPTH);
        let spawned = std::thread::Builder::new()
            .name("trace-reader".into())
            .spawn(move || {
                if let Ok(stream) = take.recv() {
                    read_ahead(stream, &tx);
                }
            });
        match spawned {
            Ok(reader) => match give.send(inner) {
                Ok(()) => Prefetch {
                    state: State::Threaded {
                        rx: Some(rx),
                        batch: Vec::new().into_iter(),
                        reader: Some(reader),
                        ended: false,
                    },
                },
                // The thread ended before taking the stream (cannot happen: it waits for it).
                Err(back) => Prefetch {
                    state: State::Inline(back.0),
                },
            },
            Err(_) => Prefetch {
                state: State::Inline(inner),
            },
        }
    }
}

/// The reader thread: sends the stream's items in batches until its first `None`, or until the
/// consumer hangs up.
fn read_ahead(mut stream: EventStream, tx: &SyncSender<Vec<Item>>) {
    loop {
        let mut batch = Vec::with_capacity(BATCH);
        batch.extend(stream.by_ref().take(BATCH));
        let last = batch.len() < BATCH;
        if batch.is_empty() || tx.send(batch).is_err() || last {
            return;
        }
    }
}

impl Iterator for Prefetch {
    type Item = Item;

    fn next(&mut self) -> Option<Item> {
        match &mut self.state {
            State::Inline(s) => s.next(),
            State::Threaded {
                rx,
                batch,
                ended,
                reader,
            } => loop {
                if let Some(item) = batch.next() {
                    return Some(item);
                }
                if *ended {
                    return None;
                }
                match rx.as_ref().map(Receiver::recv) {
                    Some(Ok(b)) => {
                        *ended = b.len() < BATCH;
                        *batch = b.into_iter();
                    }
                    _ => {
                        // The reader ended without a short batch: the stream's length was a
                        // multiple of the batch, or the reader panicked (passed on here, as
                        // the stream read inline would have).
                        *ended = true;
                        if let Some(Err(panic)) = reader.take().map(JoinHandle::join) {
                            std::panic::resume_unwind(panic);
                        }
                        return None;
                    }
                }
            },
        }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        if let State::Threaded { rx, reader, .. } = &mut self.state {
            // Hang up first: a reader blocked on a full channel then stops at its next send.
            drop(rx.take());
            if let Some(r) = reader.take() {
                let _ = r.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn ev(i: u64) -> Item {
        if i % 1000 == 999 {
            Err(VmTraceError::row(
                &PathBuf::from("t"),
                i,
                format!("bad {i}"),
            ))
        } else {
            Ok(Event::Departure { vm: i, time: i })
        }
    }

    fn same(n: u64) {
        let direct: Vec<String> = (0..n).map(ev).map(|e| format!("{e:?}")).collect();
        let pre: Vec<String> = Prefetch::new(Box::new((0..n).map(ev)))
            .map(|e| format!("{e:?}"))
            .collect();
        assert_eq!(pre, direct, "n = {n}");
    }

    #[test]
    fn same_items_in_the_same_order_errors_included() {
        for n in [
            0,
            1,
            5,
            BATCH as u64 - 1,
            BATCH as u64,
            BATCH as u64 + 1,
            3 * BATCH as u64,
            10_007,
        ] {
            same(n);
        }
    }

    #[test]
    fn stops_at_the_first_none_like_a_for_loop() {
        // A stream that yields again after its first None: only the items before it count.
        let mut k = 0u64;
        let odd = std::iter::from_fn(move || {
            k += 1;
            (k != 4).then_some(Ok(Event::Departure { vm: k, time: k }))
        })
        .take(10);
        let got: Vec<_> = Prefetch::new(Box::new(odd))
            .map(|e| e.unwrap().vm())
            .collect();
        assert_eq!(got, vec![1, 2, 3]);
    }

    #[test]
    fn a_panicking_reader_is_not_a_short_stream() {
        let boom = (0..5u64).map(|i| {
            assert!(i < 3, "reader failed");
            ev(i)
        });
        let got = std::panic::catch_unwind(move || Prefetch::new(Box::new(boom)).count());
        assert!(
            got.is_err(),
            "the panic must reach the consumer, not end the stream"
        );
    }

    #[test]
    fn dropping_early_ends_the_reader() {
        // An endless stream: dropping the consumer must stop the reader (else the join hangs).
        let mut p = Prefetch::new(Box::new((0..).map(ev)));
        assert_eq!(p.next().unwrap().unwrap().vm(), 0);
        drop(p);
    }
}
