//! Store behaviour through the library's public API, run on SQLite and PostgreSQL.

mod common;

use common::{SEATS_CSV, import_members_str, load_seats};
use phonebank::domain::{CampaignStatus, PhoneNumber};
use phonebank::import::{ImportReport, Rejected, import_seats};
use phonebank::store::StoreError;
use phonebank::store::seats::SeatPatch;

fn gb(s: &str) -> PhoneNumber {
    PhoneNumber::parse(s, phonenumber::country::Id::GB).unwrap()
}

#[test]
fn both_migration_folders_hold_the_same_versions() {
    let names = |dir: &str| {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    let sqlite = names("migrations/sqlite");
    assert!(!sqlite.is_empty());
    assert_eq!(sqlite, names("migrations/postgres"));
}

/// A member file exercising every accepted phone format, a BOM, CRLF endings, unknown
/// seats, bad numbers and a repeated member id.
const MIXED_MEMBERS: &str = "\u{feff}Member_ID,NAME,Phone,Constituency,Membership\r\n\
M001,Alex Example,07700 900123,Hendon,full\r\n\
M002,Sam Example,+44 (0)7700 900124,E14001279,supporter\r\n\
M003,Kim Example,(+44) 07700 900125,hendon,full\r\n\
M004,Lee Example,0044 7700 900126,Holborn and St Pancras,full\r\n\
M005,Pat Example,447700900127,Ynys Môn,\r\n\
M006,Ray Example,07700\u{a0}900\u{a0}128,Aberdeen North,full\r\n\
M007,Max Example,07700.900.129,E14001290,full\r\n\
M008,Bad Sheet,4.47701E+11,Hendon,full\r\n\
M009,Bad Junk,call me maybe,Hendon,full\r\n\
M010,Bad Ext,07700 900130 ext 2,Hendon,full\r\n\
M011,Bad Seat,07700 900131,Atlantis,full\r\n\
M001,Alex Again,07700 900123,Hendon,full\r\n\
,No Id,07700 900132,Hendon,full\r\n\
M012,Short Row,07700 900133\r\n\
M013,Drama London,020 7946 0500,Hendon,full\r\n";

fn reasons(report: &ImportReport) -> Vec<(u64, &str)> {
    report
        .rejected
        .iter()
        .map(|r| (r.line, r.reason.as_str()))
        .collect()
}

both_backends! {
    async fn seat_file_gives_650_seats_and_reimport_changes_nothing(store) {
        let first = import_seats(&store, std::io::Cursor::new(SEATS_CSV.as_bytes())).await.unwrap();
        assert_eq!((first.imported, first.updated, first.unchanged), (650, 0, 0));
        assert!(first.rejected.is_empty(), "{:?}", first.rejected);
        assert_eq!(store.count_seats().await.unwrap(), 650);
        let again = import_seats(&store, std::io::Cursor::new(SEATS_CSV.as_bytes())).await.unwrap();
        assert_eq!((again.imported, again.updated, again.unchanged), (0, 0, 650));
        let seat = store.get_seat("W07000081").await.unwrap();
        assert_eq!(seat.name, "Aberafan Maesteg");
        assert_eq!(seat.time_zone, "Europe/London");
        assert_eq!(seat.majority_2024, Some(10354));
    }

    async fn targeting_settings_survive_a_seat_reimport(store) {
        load_seats(&store).await;
        let patch = SeatPatch { is_target: Some(true), weight: Some(3), rate_per_hour: Some(120), burst: Some(5), ..Default::default() };
        store.update_seat("e14001279", &patch).await.unwrap();
        load_seats(&store).await;
        let seat = store.get_seat("E14001279").await.unwrap();
        assert!(seat.is_target);
        assert_eq!((seat.weight, seat.rate_per_hour, seat.burst), (3, Some(120), Some(5)));
        // 0 clears a limit; absent fields are left alone.
        let seat = store.update_seat("E14001279", &SeatPatch { rate_per_hour: Some(0), ..Default::default() }).await.unwrap();
        assert_eq!((seat.rate_per_hour, seat.burst, seat.weight), (None, Some(5), 3));
        assert_eq!(store.list_seats(true).await.unwrap().len(), 1);
        assert!(matches!(store.update_seat("E99999999", &patch).await, Err(StoreError::NotFound)));
    }

    async fn seat_rows_are_validated_line_by_line(store) {
        let csv = "code,name,nation,region,majority_2024\n\
                   E14000001,Good Seat,England,London,100\n\
                   X1,Bad Code,England,London,1\n\
                   E14000002,Bad Nation,Atlantis,London,1\n\
                   E14000003,Bad Majority,England,London,lots\n\
                   E14000001,Good Seat,England,London,100\n\
                   E14000004,Bad\u{B}Name,England,London,1\n";
        let report = import_seats(&store, std::io::Cursor::new(csv.as_bytes().to_vec())).await.unwrap();
        assert_eq!(report.imported, 1);
        let lines: Vec<u64> = report.rejected.iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![3, 4, 5, 6, 7], "{:?}", report.rejected);
        assert!(report.rejected[4].reason.contains("name contains the control character U+000B"), "{:?}", report.rejected);
    }

    async fn a_mixed_member_file_imports_exactly_the_good_rows(store) {
        load_seats(&store).await;
        let report = import_members_str(&store, MIXED_MEMBERS).await;
        assert_eq!(report.imported, 8, "{report:?}");
        let got = reasons(&report);
        let lines: Vec<u64> = got.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, vec![9, 10, 11, 12, 13, 14, 15], "{got:?}");
        assert!(got[0].1.contains("scientific notation"));
        assert!(got[1].1.contains("letters"));
        assert!(got[2].1.contains("extension"));
        assert!(got[3].1.contains("Atlantis"));
        assert!(got[4].1.contains("already appears on line 2"));
        assert!(got[5].1.contains("member_id is empty"));
        assert!(got[6].1.contains("expected 5 columns, found 3"));

        // Every format landed as the same kind of E.164 number.
        for (id, e164) in [("M001", "+447700900123"), ("M002", "+447700900124"), ("M003", "+447700900125"),
                           ("M004", "+447700900126"), ("M005", "+447700900127"), ("M006", "+447700900128"),
                           ("M007", "+447700900129"), ("M013", "+442079460500")] {
            let m = store.get_member(id).await.unwrap();
            assert_eq!(m.phone.as_e164(), e164, "{id}");
        }
        let m = store.get_member("M002").await.unwrap();
        assert_eq!((m.seat_code.as_str(), m.seat_name.as_str()), ("E14001279", "Hendon"));
        assert_eq!(m.attributes["membership"], "supporter");
        assert_eq!(store.get_member("M005").await.unwrap().seat_name, "Ynys Môn");
        assert!(store.get_member("M005").await.unwrap().attributes.get("membership").is_none());

        let again = import_members_str(&store, MIXED_MEMBERS).await;
        assert_eq!((again.imported, again.updated, again.unchanged), (0, 0, 8));
        assert_eq!(again.rejected, report.rejected);
        assert_eq!(store.count_members().await.unwrap(), 8);
    }

    async fn a_changed_row_updates_the_member_in_place(store) {
        load_seats(&store).await;
        import_members_str(&store, "member_id,name,phone,constituency\nM1,Alex,07700 900001,Hendon\nM2,Sam,07700 900002,Hendon\n").await;
        let report = import_members_str(&store, "member_id,name,phone,constituency\nM1,Alex Smith,07700 900001,Hendon\nM2,Sam,07700 900002,Hendon\nM3,Kim,07700 900003,Hendon\n").await;
        assert_eq!((report.imported, report.updated, report.unchanged), (1, 1, 1));
        assert_eq!(store.get_member("M1").await.unwrap().name, "Alex Smith");
    }

    async fn members_sharing_a_number_are_imported_and_flagged(store) {
        load_seats(&store).await;
        let report = import_members_str(&store, "member_id,name,phone,constituency\nH1,Ann,020 7946 0111,Hendon\nH2,Bob,+442079460111,Hendon\nH3,Cat,020 7946 0112,Hendon\n").await;
        assert_eq!(report.imported, 3);
        let lines: Vec<u64> = report.warnings.iter().map(|w| w.line).collect();
        assert_eq!(lines, vec![2, 3], "{:?}", report.warnings);
        assert_eq!(report.shared_phone_rows, 2);
        // The warning says what the claim does (README "Shared numbers"): the number is
        // never on two live calls, and each member on it is still called in turn.
        for w in &report.warnings {
            assert_eq!(w.warning, phonebank::import::members::SHARED_NUMBER_WARNING);
        }
        assert!(report.warnings[0].warning.contains("never on two live calls at once"));
        assert!(report.warnings[0].warning.contains("each member on it is still called in turn"));
        assert!(!report.warnings[0].warning.contains("at most once"));
        let on_number = store.members_by_phone(&gb("020 7946 0111")).await.unwrap();
        assert_eq!(on_number.len(), 2);
        assert_eq!(on_number[0].shares_phone_with, vec!["H2".to_string()]);
    }

    // A name is spoken inside <Say>, where XML 1.0 cannot carry C0 control characters,
    // and PostgreSQL cannot store NUL at all: such a row is rejected with its line and
    // the column, and the rest of the file is imported (on both engines).
    async fn control_characters_in_member_rows_are_rejected_by_line(store) {
        load_seats(&store).await;
        let csv = "member_id,name,phone,constituency,membership,notes\n\
                   M1,Ann,+447700900001,Hendon,full,\n\
                   M2,Nu\u{0}l,+447700900002,Hendon,full,\n\
                   M3,Cat,+447700900003,Hendon,full,\"two\tparts\"\n\
                   M4,Dee\u{B}Smith,+447700900004,Hendon,full,\n\
                   M5,Eve,+447700900005,Hendon,ful\u{1}l,\n\
                   M6,Fay\tJones,+447700900006,Hendon,full,\n\
                   M\u{0}7,Gus,+447700900007,Hendon,full,\n\
                   M8,Hal\u{FFFF},+447700900008,Hendon,full,\n";
        let report = phonebank::import::import_members(&store, std::io::Cursor::new(csv.as_bytes().to_vec()), phonenumber::country::Id::GB, phonebank::import::QueueNew::Now)
            .await
            .expect("one bad row never fails the import");
        assert_eq!(report.imported, 2, "{report:?}");
        let got = reasons(&report);
        let lines: Vec<u64> = got.iter().map(|(l, _)| *l).collect();
        assert_eq!(lines, vec![3, 5, 6, 7, 8, 9], "{got:?}");
        for ((_, reason), (column, code)) in got.iter().zip([("name", "U+0000"), ("name", "U+000B"), ("membership", "U+0001"),
                                                              ("name", "U+0009"), ("member_id", "U+0000"), ("name", "U+FFFF")]) {
            assert!(reason.starts_with(column) && reason.contains(code), "{reason:?} should name {column} and {code}");
        }
        assert_eq!(store.get_member("M3").await.unwrap().attributes["notes"], "two\tparts");
        assert!(matches!(store.get_member("M2").await, Err(StoreError::NotFound)));
    }

    // Two exports joined into one file: the second one's byte-order mark is not part of
    // the member id (or the next clean import would add the same person again), and its
    // header line is skipped with a warning rather than rejected as a member.
    async fn a_byte_order_mark_mid_file_is_not_part_of_any_value(store) {
        load_seats(&store).await;
        let first = "member_id,name,phone,constituency\nA1,Ann,+447700900001,Hendon\n\u{FEFF}A2,Bob,+447700900002,Hendon\nA3,\u{FEFF}Cat\u{FEFF},+447700900003,Hendon\n";
        let rep = import_members_str(&store, first).await;
        assert_eq!((rep.imported, rep.rejected.len()), (3, 0), "{rep:?}");
        let again = "member_id,name,phone,constituency\nA1,Ann,+447700900001,Hendon\nA2,Bob,+447700900002,Hendon\nA3,Cat,+447700900003,Hendon\n";
        let rep = import_members_str(&store, again).await;
        assert_eq!((rep.imported, rep.updated, rep.unchanged), (0, 0, 3), "same people re-imported: {rep:?}");
        assert_eq!(store.count_members().await.unwrap(), 3);

        let joined = "\u{FEFF}member_id,name,phone,constituency\r\nA1,Ann,+447700900001,Hendon\r\n\
                      \u{FEFF}Member_ID,Name,Phone,Constituency\r\nA4,Dan,+447700900004,Hendon\r\n";
        let rep = import_members_str(&store, joined).await;
        assert_eq!((rep.imported, rep.unchanged, rep.rejected.len()), (1, 1, 0), "{rep:?}");
        assert_eq!(rep.warnings.len(), 1, "{rep:?}");
        assert_eq!(rep.warnings[0].line, 3);
        assert!(rep.warnings[0].warning.contains("header line is repeated"), "{rep:?}");
        assert_eq!(store.get_member("A4").await.unwrap().name, "Dan");
    }

    async fn members_need_seats_first(store) {
        let err = phonebank::import::import_members(&store, std::io::Cursor::new(b"member_id,name,phone,constituency\n".to_vec()), phonenumber::country::Id::GB, phonebank::import::QueueNew::Now).await.unwrap_err();
        assert!(err.to_string().contains("import seats"), "{err}");
    }

    async fn a_file_without_the_required_columns_is_refused_whole(store) {
        load_seats(&store).await;
        let err = phonebank::import::import_members(&store, std::io::Cursor::new(b"id,name,mobile\nM1,A,07700900001\n".to_vec()), phonenumber::country::Id::GB, phonebank::import::QueueNew::Now).await.unwrap_err();
        assert_eq!(err.to_string(), "the header is missing required column(s): member_id, phone, constituency");
        assert_eq!(store.count_members().await.unwrap(), 0);
    }

    async fn a_large_file_crosses_batches_without_losing_a_row(store) {
        load_seats(&store).await;
        // 5,000 members over several batches, with a bad row every 1,000.
        let mut csv = String::from("member_id,name,phone,constituency\n");
        for i in 0..5_000u32 {
            let phone = if i % 1000 == 999 { "nonsense".to_string() } else { format!("0113 496 0{:03}", i % 1000) };
            csv.push_str(&format!("M{i},Member {i},{phone},E14001279\n"));
        }
        let report = import_members_str(&store, &csv).await;
        assert_eq!(report.imported, 4_995);
        let lines: Vec<u64> = report.rejected.iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![1001, 2001, 3001, 4001, 5001]);
        assert_eq!(store.count_members().await.unwrap(), 4_995);
    }

    async fn suppression_is_idempotent_and_every_change_is_audited(store) {
        let n = gb("07700 900555");
        assert!(store.suppress(&n, "texted STOP", "sms", "webhook").await.unwrap());
        assert!(!store.suppress(&n, "again", "sms", "webhook").await.unwrap());
        assert_eq!(store.suppression(&n).await.unwrap().unwrap().reason, "texted STOP");
        assert!(store.unsuppress(&n, "organiser", "asked to rejoin in writing", "org").await.unwrap());
        assert!(!store.unsuppress(&n, "organiser", "again", "org").await.unwrap());
        assert!(store.suppression(&n).await.unwrap().is_none());
        let audit = store.suppression_audit(&n).await.unwrap();
        let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
        assert_eq!(actions, vec!["add", "remove"]);
        assert_eq!(audit[1].note.as_deref(), Some("asked to rejoin in writing"));
    }

    async fn an_opted_out_number_shows_on_every_member_holding_it(store) {
        load_seats(&store).await;
        import_members_str(&store, "member_id,name,phone,constituency\nH1,Ann,020 7946 0111,Hendon\nH2,Bob,020 7946 0111,Hendon\n").await;
        store.suppress(&gb("020 7946 0111"), "STOP", "sms", "webhook").await.unwrap();
        assert!(store.get_member("H1").await.unwrap().opted_out);
        assert!(store.get_member("H2").await.unwrap().opted_out);
    }

    async fn campaign_status_moves_only_along_allowed_paths(store) {
        let spec = phonebank::store::campaigns::CampaignSpec {
            name: "GE".into(),
            caller_number: gb("020 7946 0000"),
            script: serde_json::from_value(serde_json::json!({"questions": [{"code": "q", "text": "?", "options": [
                {"digit": "1", "code": "yes", "label": "Yes"}, {"digit": "2", "code": "no", "label": "No"}]}]})).unwrap(),
            calling_hours: Default::default(),
            retry_policy: Default::default(),
        };
        let c = store.create_campaign(&spec).await.unwrap();
        assert_eq!(c.status, CampaignStatus::Draft);
        assert!(matches!(store.set_campaign_status(c.id, CampaignStatus::Paused).await, Err(StoreError::Conflict(_))));
        assert_eq!(store.set_campaign_status(c.id, CampaignStatus::Active).await.unwrap().status, CampaignStatus::Active);
        assert_eq!(store.set_campaign_status(c.id, CampaignStatus::Active).await.unwrap().status, CampaignStatus::Active);
        // The script is frozen while calling, but the name is not.
        let mut renamed = spec.clone();
        renamed.name = "GE 2029".into();
        assert_eq!(store.update_campaign(c.id, &renamed).await.unwrap().name, "GE 2029");
        let mut rescripted = renamed.clone();
        rescripted.script.questions[0].text = "Changed?".into();
        assert!(matches!(store.update_campaign(c.id, &rescripted).await, Err(StoreError::Conflict("campaign_active"))));
        store.set_campaign_status(c.id, CampaignStatus::Paused).await.unwrap();
        store.update_campaign(c.id, &rescripted).await.unwrap();
        store.set_campaign_status(c.id, CampaignStatus::Finished).await.unwrap();
        assert!(matches!(store.set_campaign_status(c.id, CampaignStatus::Active).await, Err(StoreError::Conflict(_))));
        assert!(matches!(store.set_campaign_status(999, CampaignStatus::Active).await, Err(StoreError::NotFound)));
        let report = store.campaign_report(c.id).await.unwrap();
        assert_eq!(report.totals.attempts, 0);
    }

    async fn one_volunteer_per_number(store) {
        let v = store.create_volunteer("Jo", &gb("020 7946 0001"), Some("North"), "hash").await.unwrap();
        assert_eq!(v.team.as_deref(), Some("North"));
        let dup = store.create_volunteer("Jo again", &gb("+442079460001"), None, "hash").await;
        assert!(matches!(dup, Err(StoreError::Conflict("volunteer_phone_taken"))), "{dup:?}");
        let (found, hash) = store.volunteer_by_phone(&gb("020 7946 0001")).await.unwrap().unwrap();
        assert_eq!((found.id, hash.as_str()), (v.id, "hash"));
        store.delete_volunteer(v.id).await.unwrap();
        assert!(matches!(store.get_volunteer(v.id).await, Err(StoreError::NotFound)));
    }

    async fn revoked_tokens_stop_working(store) {
        let token = phonebank::domain::ApiToken::generate();
        let id = store.create_token("organiser", &token).await.unwrap();
        assert_eq!(store.authenticate(&token).await.unwrap().as_deref(), Some("organiser"));
        assert_eq!(store.authenticate(&phonebank::domain::ApiToken::generate()).await.unwrap(), None);
        store.revoke_token(id).await.unwrap();
        assert_eq!(store.authenticate(&token).await.unwrap(), None);
    }
}

#[test]
fn rejected_rows_serialise_as_the_spec_says() {
    let report = ImportReport {
        imported: 1,
        updated: 0,
        unchanged: 2,
        rejected: vec![Rejected {
            line: 3,
            reason: "bad".into(),
        }],
        warnings: vec![],
        shared_phone_rows: 0,
    };
    let json: serde_json::Value = serde_json::to_value(&report).unwrap();
    assert_eq!(json["imported"], 1);
    assert_eq!(json["rejected"][0]["line"], 3);
    assert_eq!(json["rejected"][0]["reason"], "bad");
}
