//! The volunteer loop through the voice webhooks, driven as the carrier drives it, on
//! SQLite and PostgreSQL.

mod common;

use common::app::campaign_body;
use common::phone::{
    CAMPAIGN_NUMBER, Call, Doc, PhoneBank, VOLUNTEER, members_csv, tuesday_evening, voice_app,
};
use common::{import_members_str, load_seats};
use phonebank::domain::Clock;
use phonebank::store::Store;
use serde_json::json;

/// A phone bank ready to call with `n` members over three Barnet seats.
struct Bank {
    bank: PhoneBank,
    members: Vec<String>,
}

impl std::ops::Deref for Bank {
    type Target = PhoneBank;
    fn deref(&self) -> &PhoneBank {
        &self.bank
    }
}

async fn bank(store: Store, n: usize) -> Bank {
    let seats = ["Hendon", "Finchley and Golders Green", "Chipping Barnet"];
    let (csv, members) = members_csv(n, &seats);
    Bank {
        bank: PhoneBank::open(store, &csv, &[]).await,
        members,
    }
}

impl Bank {
    async fn report(&self) -> serde_json::Value {
        let r = self
            .app
            .get(&format!("/api/v1/campaigns/{}/report", self.campaign_id))
            .await;
        assert_eq!(r.status, 200);
        r.body["totals"].clone()
    }
}

/// The member named in an announcement.
fn announced(doc: &Doc) -> String {
    let said = doc.said();
    let start = said
        .find("Next: ")
        .unwrap_or_else(|| panic!("no member in {said}"))
        + 6;
    said[start..].split(" from ").next().unwrap().to_owned()
}

both_backends! {
    async fn a_full_session_calls_three_members_and_stores_every_answer(store) {
        let bank = bank(store, 3).await;
        let (mut call, mut doc) = bank.logged_in(1).await;
        let mut names = Vec::new();
        for _ in 0..3 {
            assert!(doc.said().contains("Call reference"), "{}", doc.raw);
            names.push(announced(&doc));
            // Ready: the member is dialled from the volunteer's leg.
            let dialling = call.press(&doc, "1").await;
            let dial = dialling.dial().expect("a Dial");
            assert_eq!(dial.attr("callerId"), Some(CAMPAIGN_NUMBER));
            assert_eq!(dial.attr("hangupOnStar"), Some("true"));
            let number = &dial.children[0].text;
            assert!(bank.members.contains(number), "{number}");
            let (q1, _) = call.run_dial(&dialling, "completed", 95).await;
            assert!(q1.said().contains("Can we count on your vote?"), "{}", q1.raw);
            // Yes leads to the second question (branching); No there ends the script.
            let q2 = call.press(&q1, "1").await;
            assert!(q2.said().contains("Would you help on polling day?"), "{}", q2.raw);
            doc = call.press(&q2, "2").await;
            assert!(doc.said().contains("Saved"), "{}", doc.raw);
            if names.len() < 3 {
                assert!(doc.said().contains("Next: "), "{}", doc.raw);
            }
        }
        // Nobody left: the volunteer is told and hangs up.
        assert!(doc.said().contains("nobody to call"), "{}", doc.raw);
        call.hang_up().await;

        names.sort();
        names.dedup();
        assert_eq!(names.len(), 3, "three different members");
        call.assert_masked(&bank.members);
        let totals = bank.report().await;
        assert_eq!(totals["attempts"], 3);
        assert_eq!(totals["reached"], 3);
        assert_eq!(totals["completed"], 3);
        assert_eq!(totals["answers"]["support"]["yes"], 3);
        assert_eq!(totals["answers"]["help"]["no"], 3);
        assert_eq!(bank.count("select count(*) from answers").await, 6);
        assert_eq!(
            bank.count("select count(*) from volunteer_sessions where state = 'ended'").await,
            1
        );
    }

    async fn wrong_pins_hang_up_and_are_limited_per_number(store) {
        let bank = bank(store, 1).await;
        let mut call = Call::new(&bank.app, 1, VOLUNTEER);
        let doc = call.start().await;
        let doc = call.press(&doc, "0000000").await;
        assert!(doc.said().contains("not right"), "{}", doc.raw);
        assert!(doc.gather().is_some(), "asked again");
        // No key at all counts as a wrong try too.
        let doc = call.silence(&doc).await;
        let doc = call.press(&doc, "1").await;
        assert!(doc.hangs_up(), "third wrong PIN hangs up: {}", doc.raw);
        // Calls from that number keep failing until the window passes, even with the
        // right PIN, once ten wrong tries have been made.
        for n in 2..=3 {
            let mut c = Call::new(&bank.app, n, VOLUNTEER);
            let d = c.start().await;
            let d = c.press(&d, "9").await;
            let d = c.press(&d, "9").await;
            let d = c.press(&d, "9").await;
            assert!(d.hangs_up());
        }
        let mut c = Call::new(&bank.app, 4, VOLUNTEER);
        let d = c.start().await;
        let d = c.press(&d, "9").await;
        assert!(d.gather().is_some(), "the tenth wrong PIN is still answered: {}", d.raw);
        let mut last = Call::new(&bank.app, 9, VOLUNTEER);
        let d = last.start().await;
        let d = last.press(&d, &bank.pin).await;
        assert!(d.said().contains("Too many wrong PINs"), "{}", d.raw);
        assert_eq!(bank.count("select count(*) from contact_attempts").await, 0);
    }

    async fn no_key_pressed_reprompts_then_ends_keeping_answers(store) {
        let bank = bank(store, 2).await;
        let (mut call, doc) = bank.logged_in(1).await;
        let dialling = call.press(&doc, "1").await;
        let (q1, _) = call.run_dial(&dialling, "completed", 60).await;
        let q2 = call.press(&q1, "1").await;
        // Silence on the second question: asked again, then the call ends politely.
        let again = call.silence(&q2).await;
        assert!(again.said().contains("Would you help"), "{}", again.raw);
        let again = call.silence(&again).await;
        assert!(again.said().contains("Would you help"), "{}", again.raw);
        let end = call.silence(&again).await;
        assert!(end.hangs_up(), "{}", end.raw);
        assert!(end.said().contains("saved"), "{}", end.raw);
        // The keyed answer is kept; the member is finished, not re-queued.
        assert_eq!(bank.count("select count(*) from answers").await, 1);
        let totals = bank.report().await;
        assert_eq!(totals["answers"]["support"]["yes"], 1);
        assert_eq!(totals["completed"], 1);
    }

    async fn undo_and_invalid_keys_and_the_outcome_menu(store) {
        let bank = bank(store, 3).await;
        let (mut call, doc) = bank.logged_in(1).await;
        let dialling = call.press(&doc, "1").await;
        let (q1, _) = call.run_dial(&dialling, "completed", 60).await;
        // Not an option, several keys, a letter: asked again, nothing stored.
        for bad in ["7", "12", "x", ""] {
            let d = call.press(&q1, bad).await;
            assert!(d.said().contains("Can we count on your vote?"), "{bad:?}: {}", d.raw);
        }
        let q2 = call.press(&q1, "1").await;
        // Undo the last answer (9) and answer differently.
        let back = call.press(&q2, "9").await;
        assert!(back.said().contains("Last answer removed"), "{}", back.raw);
        assert!(back.said().contains("Can we count on your vote?"), "{}", back.raw);
        let next = call.press(&back, "2").await;
        assert!(next.said().contains("Saved"), "{}", next.raw);
        assert_eq!(bank.count("select count(*) from answers where option_code = 'no'").await, 1);
        assert_eq!(bank.count("select count(*) from answers").await, 1);

        // Second member: the call drops after 3 seconds, so the outcome menu comes first.
        let dialling = call.press(&next, "1").await;
        let (menu, _) = call.run_dial(&dialling, "completed", 3).await;
        assert!(menu.said().contains("Other outcomes"), "{}", menu.raw);
        // 8 = technical problem: recorded, and the member will be tried again.
        let after = call.press(&menu, "8").await;
        assert!(after.said().contains("technical problem"), "{}", after.raw);
        assert!(after.said().contains("Call reference"), "{}", after.raw);

        // Third member: opt-out key on the outcome menu suppresses their number.
        let dialling = call.press(&after, "1").await;
        let number = dialling.dial().unwrap().children[0].text.clone();
        let (q1, _) = call.run_dial(&dialling, "completed", 40).await;
        let menu = call.press(&q1, "0").await;
        let done = call.press(&menu, "0").await;
        assert!(done.said().contains("will not be contacted"), "{}", done.raw);
        let looked = bank
            .app
            .json("POST", "/api/v1/suppressions/lookup", json!({"phone": number}))
            .await;
        assert_eq!(looked.status, 200, "{}", looked.text);
        call.assert_masked(&bank.members);
    }

    async fn busy_and_no_answer_requeue_by_the_retry_policy(store) {
        let bank = bank(store, 1).await;
        let morning: jiff::Timestamp = "2026-12-08T11:00:00Z".parse().unwrap();
        bank.clock.set(morning);
        let (mut call, doc) = bank.logged_in(1).await;
        let dialling = call.press(&doc, "1").await;
        let (after, _) = call.run_dial(&dialling, "no-answer", 0).await;
        assert!(after.said().contains("No answer"), "{}", after.raw);
        // The only member waits out the retry gap: nobody to call now.
        assert!(after.said().contains("nobody to call"), "{}", after.raw);
        // Past the gap they come back.
        // Default policy: no answer is tried again after four hours.
        bank.clock.set(morning + jiff::SignedDuration::from_mins(239));
        let early = call.press(&after, "1").await;
        assert!(early.said().contains("nobody to call"), "{}", early.raw);
        bank.clock.set(morning + jiff::SignedDuration::from_mins(241));
        let after = early;
        let again = call.press(&after, "1").await;
        assert!(again.said().contains("Next: "), "{}", again.raw);
        let dialling = call.press(&again, "1").await;
        let (after, _) = call.run_dial(&dialling, "busy", 0).await;
        assert!(after.said().contains("busy"), "{}", after.raw);
        let totals = bank.report().await;
        assert_eq!(totals["attempts"], 2);
        assert_eq!(totals["reached"], 0);
    }

    async fn hanging_up_releases_the_lease_and_keeps_keyed_answers(store) {
        let bank = bank(store, 2).await;
        // Hang up while hearing who is next: the member goes straight back.
        let (mut call, _announce) = bank.logged_in(1).await;
        call.hang_up().await;
        assert_eq!(bank.count("select count(*) from contact_attempts where state = 'released'").await, 1);
        assert_eq!(bank.count("select count(*) from call_queue where state = 'ready'").await, 2);
        // Hang up after keying one answer: the answer is saved, the attempt closed.
        let (mut call, announce) = bank.logged_in(2).await;
        let dialling = call.press(&announce, "1").await;
        let (q1, _) = call.run_dial(&dialling, "completed", 60).await;
        let _q2 = call.press(&q1, "1").await;
        call.hang_up().await;
        assert_eq!(bank.count("select count(*) from answers").await, 1);
        assert_eq!(bank.count("select count(*) from contact_attempts where state in ('leased', 'dialling', 'answered')").await, 0);
        // A webhook for the ended call hears a goodbye, not an error.
        let late = call.post("/webhooks/voice/next", &[]).await;
        assert!(late.hangs_up(), "{}", late.raw);
    }

    async fn a_volunteer_who_vanishes_mid_call_is_reconciled_not_requeued(store) {
        let bank = bank(store, 1).await;
        let (mut call, announce) = bank.logged_in(1).await;
        let dialling = call.press(&announce, "1").await;
        let dial = dialling.dial().unwrap().clone();
        let number = dial.children[0].text.clone();
        let callback = dial.children[0].attr("statusCallback").unwrap().to_owned();
        let child = "CA000000000000000000000000000c0009";
        call.member_event(&callback, child, &number, "in-progress", 2).await;
        // The volunteer's leg ends while the member may still be on the line.
        call.hang_up().await;
        assert_eq!(bank.count("select count(*) from contact_attempts where state = 'reconcile'").await, 1);
        assert_eq!(bank.count("select count(*) from call_queue where state = 'ready'").await, 0, "not re-queued blindly");
        // The member leg's final status settles it; a connected call nobody keyed is
        // not rung again for 72 hours.
        call.member_event(&callback, child, &number, "completed", 3).await;
        assert_eq!(bank.count("select count(*) from contact_attempts where state = 'completed'").await, 1);
        let not_before = bank.count("select not_before from call_queue").await;
        assert!(not_before >= tuesday_evening().as_millisecond() + 72 * 3_600_000, "{not_before}");
    }

    async fn the_sweeper_takes_back_idle_leases_and_stale_calls(store) {
        let bank = bank(store, 2).await;
        let state = phonebank::http::AppState::new(bank.app.store.clone(), common::phone::voice_settings())
            .with_clock(bank.clock.clone());
        // A lease whose volunteer went silent (their call ended without telling us).
        let (_call, _announce) = bank.logged_in(1).await;
        assert_eq!(phonebank::sweeper::sweep_once(&state).await.unwrap(), 0, "not yet expired");
        bank.clock.set(tuesday_evening() + jiff::SignedDuration::from_mins(16));
        assert_eq!(phonebank::sweeper::sweep_once(&state).await.unwrap(), 1);
        assert_eq!(bank.count("select count(*) from contact_attempts where state = 'released'").await, 1);
        assert_eq!(bank.count("select count(*) from call_queue where state = 'ready'").await, 2);
        // A dial whose volunteer and member both went silent: reconciled after the
        // call limit, then settled after an hour with no final status.
        let (mut call, announce) = bank.logged_in(2).await;
        let _dialling = call.press(&announce, "1").await;
        let mut t = tuesday_evening() + jiff::SignedDuration::from_mins(16);
        for (mins, open) in [(30, 1), (80, 1), (200, 0)] {
            t += jiff::SignedDuration::from_mins(mins);
            bank.clock.set(t);
            phonebank::sweeper::sweep_once(&state).await.unwrap();
            assert_eq!(
                bank.count("select count(*) from contact_attempts where state in ('dialling', 'reconcile')").await,
                open,
                "after {mins} more minutes"
            );
        }
        // Two sweepers at once settle nothing twice.
        let (a, b) = tokio::join!(phonebank::sweeper::sweep_once(&state), phonebank::sweeper::sweep_once(&state));
        assert_eq!(a.unwrap() + b.unwrap(), 0);
    }

    async fn several_active_campaigns_are_offered_as_a_menu(store) {
        let bank = bank(store, 2).await;
        let mut second = campaign_body("Finchley Calls");
        second["caller_number"] = json!("020 7946 0001");
        let c = bank.app.json("POST", "/api/v1/campaigns", second).await;
        let id = c.body["id"].as_i64().unwrap();
        bank.app.json("POST", &format!("/api/v1/campaigns/{id}/start"), json!({})).await;
        // Dialling a campaign's own number picks it.
        let mut call = Call::new(&bank.app, 1, VOLUNTEER);
        call.to = "+442079460001".into();
        let doc = call.start().await;
        let doc = call.press(&doc, &bank.pin).await;
        assert!(doc.said().contains("You are calling for Finchley Calls"), "{}", doc.raw);
        call.hang_up().await;
        // Any other number: a menu.
        let mut call = Call::new(&bank.app, 2, VOLUNTEER);
        call.to = "+442079460999".into();
        let doc = call.start().await;
        let menu = call.press(&doc, &bank.pin).await;
        assert!(menu.said().contains("Choose a campaign"), "{}", menu.raw);
        let bad = call.press(&menu, "7").await;
        assert!(bad.said().contains("not on the menu"), "{}", bad.raw);
        let chosen = call.press(&bad, "1").await;
        assert!(chosen.said().contains("You are calling for Hendon Calls"), "{}", chosen.raw);
        assert!(chosen.said().contains("Next: "), "{}", chosen.raw);
        // Pausing a campaign ends its sessions politely at the next step.
        bank.app.json("POST", &format!("/api/v1/campaigns/{}/pause", bank.campaign_id), json!({})).await;
        let bye = call.press(&chosen, "1").await;
        assert!(bye.dial().is_none(), "{}", bye.raw);
        assert!(bye.said().contains("not taking calls"), "{}", bye.raw);
        assert_eq!(bank.count("select count(*) from contact_attempts where state = 'leased'").await, 0);
    }
}

both_backends! {
    // Defence in depth: a name stored before imports refused control characters (or by
    // any other route) is still never written into TwiML, where XML 1.0 cannot carry it
    // and the provider would drop the volunteer on every call that announces the member.
    async fn a_control_character_in_a_stored_name_never_reaches_twiml(store) {
        let clock = Clock::manual(tuesday_evening());
        load_seats(&store).await;
        let rep = import_members_str(&store, "member_id,name,phone,constituency\nM1,Ann Smith,+447700900001,Hendon\n").await;
        assert_eq!(rep.imported, 1, "{rep:?}");
        sqlx::query("update members set name = $1 where external_id = 'M1'")
            .bind("Ann\u{B}Smith\u{1}")
            .execute(store.pool())
            .await
            .unwrap();
        let app = voice_app(store, clock.clone()).await;
        let c = app.json("POST", "/api/v1/campaigns", campaign_body("Hendon Calls")).await;
        let id = c.body["id"].as_i64().unwrap();
        app.json("POST", &format!("/api/v1/campaigns/{id}/start"), json!({})).await;
        let v = app.json("POST", "/api/v1/volunteers", json!({"name": "Vic", "phone": VOLUNTEER})).await;
        let pin = v.body["pin"].as_str().unwrap().to_owned();
        let mut call = Call::new(&app, 1, VOLUNTEER);
        let doc = call.start().await;
        let announce = call.press(&doc, &pin).await;
        assert!(announce.said().contains("AnnSmith"), "the member was not announced: {}", announce.raw);
        let bad: Vec<char> = call
            .docs
            .iter()
            .flat_map(|d| d.raw.chars())
            .filter(|&c| phonebank::domain::text::is_xml_forbidden(c))
            .collect();
        assert!(bad.is_empty(), "TwiML with XML-forbidden characters {bad:?}: {}", announce.raw);
    }
}
