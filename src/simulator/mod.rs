//! The carrier simulator: a test double for the telephony provider, faithful to its
//! published protocol, that drives the real server over real HTTP.
//!
//! * [`carrier`]: signed webhooks out (as the provider signs them) and the provider's
//!   REST API in (Create Call, Modify Call, Create Message), with injectable faults.
//! * [`twiml`]: reading the TwiML the server answers.
//! * [`people`]: volunteers who follow the TwiML and press keys like people do, and
//!   members who answer, are busy, let voicemail pick up, ring back or text STOP.
//! * [`checks`]: the guarantees, checked from what the carrier saw.
//!
//! Simulated time runs faster than real time: the server is given the same
//! [`Clock::Scaled`](crate::domain::Clock) so calling hours, retry gaps and seat rate
//! limits all follow the simulated evening. `phonebank demo`, the end-to-end tests and
//! the load benchmark all run through [`Sim::run`].

pub mod carrier;
pub mod checks;
pub mod people;
pub mod twiml;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use rand::{Rng as _, SeedableRng as _};
use tokio::sync::{mpsc, oneshot};

pub use carrier::{Carrier, Faults, Outbound, PlacedCall, RestApi};
pub use checks::{Check, Observer, SeatLimit};
pub use people::{Behaviour, VolunteerCard};

use crate::domain::{Clock, Script};

/// Everything the simulated people share.
pub struct Sim {
    pub clock: Clock,
    /// The simulated evening.
    pub start: Timestamp,
    pub end: Timestamp,
    /// Simulated seconds per real second.
    pub scale: f64,
    pub carrier: Carrier,
    pub observer: Observer,
    pub behaviour: Behaviour,
    pub script: Script,
    pub campaign_number: String,
    volunteer_numbers: HashSet<String>,
    /// Numbers two or more members share: a reply from one is never an answer.
    shared_numbers: HashSet<String>,
    waiting: Mutex<HashMap<String, oneshot::Sender<PlacedCall>>>,
    block_list: Arc<Mutex<HashSet<(String, String)>>>,
    ring_backs: mpsc::UnboundedSender<String>,
    ring_back_rx: Mutex<Option<mpsc::UnboundedReceiver<String>>>,
    stop: AtomicBool,
}

/// Sleep for `secs` of simulated time.
pub async fn sleep_sim(sim: &Sim, secs: f64) {
    let real = (secs / sim.scale).clamp(0.0, 3600.0);
    tokio::time::sleep(Duration::from_secs_f64(real)).await;
}

/// The simulated people and their evening.
pub struct Cast {
    pub volunteers: Vec<VolunteerCard>,
    /// Members who will text STOP at some point.
    pub stop_texters: Vec<String>,
    pub seed: u64,
}

impl Sim {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        clock: Clock,
        start: Timestamp,
        end: Timestamp,
        scale: f64,
        carrier: Carrier,
        observer: Observer,
        behaviour: Behaviour,
        script: Script,
        campaign_number: &str,
        rest: &RestApi,
        volunteers: &[VolunteerCard],
        shared_numbers: HashSet<String>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            clock,
            start,
            end,
            scale,
            carrier,
            observer,
            behaviour,
            script,
            campaign_number: campaign_number.to_owned(),
            volunteer_numbers: volunteers.iter().map(|v| v.phone.clone()).collect(),
            shared_numbers,
            waiting: Mutex::default(),
            block_list: rest.block_list(),
            ring_backs: tx,
            ring_back_rx: Mutex::new(Some(rx)),
            stop: AtomicBool::new(false),
        }
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// A volunteer waits for the server to ring them.
    fn expect_call(&self, number: &str, tx: oneshot::Sender<PlacedCall>) {
        if let Ok(mut w) = self.waiting.lock() {
            w.insert(number.to_owned(), tx);
        }
    }

    fn ring_back(&self, number: &str) {
        let _ = self.ring_backs.send(number.to_owned());
    }

    /// A STOP text blocks the pair at the carrier too, as the provider's own opt-out does.
    fn carrier_blocks(&self, number: &str) {
        if let Ok(mut b) = self.block_list.lock() {
            b.insert((number.to_owned(), self.campaign_number.clone()));
        }
    }

    /// Run the evening: every volunteer's sessions, members ringing back and texting
    /// STOP, and the carrier's side of every call and text the server places. Returns
    /// when the evening is over and every volunteer has hung up.
    pub async fn run(self: Arc<Self>, mut outbound: mpsc::UnboundedReceiver<Outbound>, cast: Cast) {
        let mut tasks = tokio::task::JoinSet::new();
        let mut background = tokio::task::JoinSet::new();
        let mut rng = rand::rngs::StdRng::seed_from_u64(cast.seed);
        for card in cast.volunteers {
            tasks.spawn(people::volunteer(self.clone(), card, rng.random()));
        }
        for number in cast.stop_texters {
            background.spawn(people::member_texts_stop(
                self.clone(),
                number,
                rng.random(),
            ));
        }
        // The carrier's REST side: calls and texts the server asked for.
        let sim = self.clone();
        background.spawn(async move {
            while let Some(o) = outbound.recv().await {
                let sim = sim.clone();
                tokio::spawn(async move { sim.deliver(o).await });
            }
        });
        let ring_back_rx = self.ring_back_rx.lock().ok().and_then(|mut r| r.take());
        if let Some(mut rx) = ring_back_rx {
            let sim = self.clone();
            background.spawn(async move {
                let mut seed = 1u64;
                while let Some(number) = rx.recv().await {
                    seed += 1;
                    tokio::spawn(people::member_rings_back(sim.clone(), number, seed));
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        self.stop.store(true, Ordering::Relaxed);
        background.abort_all();
        // Let in-flight member tasks see the stop flag.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    async fn deliver(&self, o: Outbound) {
        match o {
            Outbound::Call(call) => {
                let waiter = self
                    .waiting
                    .lock()
                    .ok()
                    .and_then(|mut w| w.remove(&call.to));
                match waiter {
                    Some(tx) => {
                        // The phone rings for a few seconds before they pick up.
                        let ring = rand::rng().random_range(3.0..10.0);
                        sleep_sim(self, ring).await;
                        let _ = tx.send(call);
                    }
                    None => {
                        // Nobody is expecting it: it rings out.
                        if let Some(url) = &call.status_callback {
                            let params: Vec<(String, String)> = [
                                ("AccountSid", self.carrier.account_sid.as_str()),
                                ("CallSid", call.sid.as_str()),
                                ("From", call.from.as_str()),
                                ("To", call.to.as_str()),
                                ("Direction", "outbound-api"),
                                ("CallStatus", "no-answer"),
                                ("SequenceNumber", "1"),
                            ]
                            .into_iter()
                            .map(|(k, v)| (k.to_owned(), v.to_owned()))
                            .collect();
                            self.carrier.post(url, &params).await;
                        }
                    }
                }
            }
            Outbound::Text(text) => {
                if self.volunteer_numbers.contains(&text.to) {
                    self.observer.shown_to_volunteer(&text.body);
                }
                if let Some(url) = &text.status_callback {
                    for (seq, status) in ["sent", "delivered"].iter().enumerate() {
                        let params: Vec<(String, String)> = [
                            ("AccountSid", self.carrier.account_sid.as_str()),
                            ("ApiVersion", "2010-04-01"),
                            ("MessageSid", text.sid.as_str()),
                            ("SmsSid", text.sid.as_str()),
                            ("MessageStatus", status),
                            ("SmsStatus", status),
                            ("From", text.from.as_str()),
                            ("To", text.to.as_str()),
                        ]
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect();
                        sleep_sim(self, 2.0 * (seq as f64 + 1.0)).await;
                        self.carrier.post(url, &params).await;
                    }
                }
                if !self.volunteer_numbers.contains(&text.to) {
                    self.observer
                        .counters
                        .texts_received
                        .fetch_add(1, Ordering::Relaxed);
                    people::member_replies(self, &text).await;
                }
            }
        }
    }
}
