//! Single flight on one replica: concurrent `get_or_load` callers of one key share one
//! cell, so one of them runs the miss path while the others wait for its value.
//!
//! A caller holds a [`Ticket`] for as long as it takes part. The flight is removed when
//! its last ticket is dropped, however that caller finished (a value, an error, or its
//! future dropped mid-load), so cancelled loads leave nothing behind. A waiter whose
//! leader is cancelled or fails is not stranded: the cell lets the next waiter run its own
//! initialisation.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use bytes::Bytes;
use tokio::sync::OnceCell;

/// The flights of one replica, by key.
#[derive(Default)]
pub(crate) struct Flights {
    by_key: Mutex<HashMap<String, Flight>>,
}

struct Flight {
    cell: Arc<OnceCell<Bytes>>,
    /// Tickets out on this flight. Counted under the map's lock (an `Arc`'s strong count
    /// would also count clones being dropped outside it).
    callers: usize,
}

impl Flights {
    /// Joins the flight of `key`, starting it if there is none.
    pub(crate) fn join<'a>(&'a self, key: &'a str) -> Ticket<'a> {
        let mut by_key = self.lock();
        let flight = by_key.entry(key.to_owned()).or_insert_with(|| Flight {
            cell: Arc::default(),
            callers: 0,
        });
        flight.callers += 1;
        Ticket {
            flights: self,
            key,
            cell: flight.cell.clone(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Flight>> {
        // The map stays consistent across a panic: every update is a single step.
        self.by_key.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Flights in progress (keys with at least one caller).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// One caller's part in a flight; dropping it leaves the flight.
pub(crate) struct Ticket<'a> {
    flights: &'a Flights,
    key: &'a str,
    cell: Arc<OnceCell<Bytes>>,
}

impl Ticket<'_> {
    /// The cell the flight's callers share.
    pub(crate) fn cell(&self) -> &OnceCell<Bytes> {
        &self.cell
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut by_key = self.flights.lock();
        let Some(flight) = by_key.get_mut(self.key) else {
            return;
        };
        if !Arc::ptr_eq(&flight.cell, &self.cell) {
            return;
        }
        flight.callers = flight.callers.saturating_sub(1);
        if flight.callers == 0 {
            by_key.remove(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_ticket_removes_the_flight() {
        let flights = Flights::default();
        let first = flights.join("k");
        let second = flights.join("k");
        assert!(Arc::ptr_eq(&first.cell, &second.cell));
        assert_eq!(flights.len(), 1);
        drop(first);
        assert_eq!(flights.len(), 1, "a caller is still on it");
        drop(second);
        assert_eq!(flights.len(), 0);
        let again = flights.join("k");
        assert!(again.cell().get().is_none(), "a new flight starts empty");
    }
}
