//! The organiser API, black-box through the router, on SQLite and PostgreSQL.

mod common;

use axum::http::StatusCode;
use common::app::{TestApp, campaign_body};
use common::load_seats;
use common::phone::{Call, tuesday_evening, voice_app};
use phonebank::domain::Clock;
use serde_json::json;

both_backends! {
    async fn requests_without_a_valid_token_get_401(store) {
        let app = TestApp::new(store).await;
        for auth in [None, Some("Bearer pbk_wrong"), Some("Basic abc"), Some("Bearer"), Some(""), Some("bearer   ")] {
            let r = app.unauthenticated("GET", "/api/v1/campaigns", auth).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{auth:?}");
            assert_eq!(r.body["error"]["code"], "unauthorized");
            assert_eq!(r.headers["www-authenticate"], "Bearer");
        }
        assert_eq!(app.get("/api/v1/campaigns").await.status, StatusCode::OK);
    }

    async fn malformed_and_wrong_json_get_400_with_a_code(store) {
        let app = TestApp::new(store).await;
        let r = app.raw("POST", "/api/v1/campaigns", "application/json", "{\"name\": ").await;
        assert_eq!((r.status, r.body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("malformed_json")));
        let r = app.json("POST", "/api/v1/campaigns", json!({"name": 5})).await;
        assert_eq!((r.status, r.body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_body")));
        let mut body = campaign_body("GE");
        body["surprise"] = json!(true);
        let r = app.json("POST", "/api/v1/campaigns", body).await;
        assert_eq!(r.body["error"]["code"], "invalid_body", "{}", r.text);
        let r = app.raw("POST", "/api/v1/campaigns", "text/plain", campaign_body("GE").to_string()).await;
        assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(r.body["error"]["code"], "unsupported_media_type");
    }

    async fn unknown_ids_and_routes_get_404(store) {
        let app = TestApp::new(store).await;
        for path in ["/api/v1/campaigns/999", "/api/v1/volunteers/999", "/api/v1/seats/E99999999",
                     "/api/v1/members/nobody", "/api/v1/campaigns/999/report", "/api/v1/nothing-here"] {
            let r = app.get(path).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(r.body["error"]["code"], "not_found", "{path}");
        }
        let r = app.get("/api/v1/campaigns/abc").await;
        assert_eq!((r.status, r.body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_path")));
    }

    async fn a_campaign_is_created_validated_and_run_through_its_states(store) {
        let app = TestApp::new(store).await;
        let r = app.json("POST", "/api/v1/campaigns", campaign_body("General election")).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let id = r.body["id"].as_i64().unwrap();
        assert_eq!(r.body["caller_number"], "+442079460000");
        assert_eq!(r.body["status"], "draft");
        assert_eq!(r.body["retry_policy"]["rules"]["refused"]["max_attempts"], 0);

        let mut bad = campaign_body("Bad");
        bad["caller_number"] = json!("not a number");
        bad["script"]["questions"][0]["options"][1]["digit"] = json!("9");
        bad["script"]["questions"][0]["options"][0]["next"] = json!("nowhere");
        let r = app.json("POST", "/api/v1/campaigns", bad).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(r.body["error"]["code"], "invalid_fields");
        let fields: Vec<&str> = r.body["error"]["fields"].as_array().unwrap().iter().map(|f| f["field"].as_str().unwrap()).collect();
        assert!(fields.contains(&"caller_number"), "{fields:?}");
        assert!(fields.contains(&"script.questions[0].options[1].digit"), "{fields:?}");
        assert!(fields.contains(&"script.questions[0].options[0].next"), "{fields:?}");

        let r = app.json("POST", &format!("/api/v1/campaigns/{id}/pause"), json!({})).await;
        assert_eq!((r.status, r.body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("status_transition")));
        assert_eq!(app.json("POST", &format!("/api/v1/campaigns/{id}/start"), json!({})).await.body["status"], "active");
        let mut changed = campaign_body("General election");
        changed["script"]["questions"][0]["text"] = json!("Reworded?");
        let r = app.json("PUT", &format!("/api/v1/campaigns/{id}"), changed.clone()).await;
        assert_eq!((r.status, r.body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("campaign_active")));
        assert_eq!(app.json("POST", &format!("/api/v1/campaigns/{id}/pause"), json!({})).await.body["status"], "paused");
        let r = app.json("PUT", &format!("/api/v1/campaigns/{id}"), changed).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.body["script"]["questions"][0]["text"], "Reworded?");
        assert_eq!(app.get("/api/v1/campaigns").await.body.as_array().unwrap().len(), 1);
        let r = app.delete(&format!("/api/v1/campaigns/{id}")).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        assert_eq!(app.get(&format!("/api/v1/campaigns/{id}")).await.status, StatusCode::NOT_FOUND);
    }

    async fn the_documented_example_campaign_is_accepted(store) {
        let app = TestApp::new(store).await;
        let example: serde_json::Value = serde_json::from_str(include_str!("../docs/examples/campaign.json")).unwrap();
        let r = app.json("POST", "/api/v1/campaigns", example).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        assert!(r.body["calling_hours"]["days"].get("sun").is_none());
    }

    async fn seats_can_be_targeted_over_the_api(store) {
        load_seats(&store).await;
        let app = TestApp::new(store).await;
        assert_eq!(app.get("/api/v1/seats").await.body.as_array().unwrap().len(), 650);
        let r = app.json("PATCH", "/api/v1/seats/E14001279", json!({"is_target": true, "weight": 3, "rate_per_hour": 120, "burst": 5})).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!((r.body["is_target"].as_bool(), r.body["weight"].as_i64()), (Some(true), Some(3)));
        let targets = app.get("/api/v1/seats?target=true").await.body;
        assert_eq!(targets.as_array().unwrap().len(), 1);
        let r = app.json("PATCH", "/api/v1/seats/E14001279", json!({"weight": -1, "time_zone": "Mars/Olympus"})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(r.body["error"]["fields"].as_array().unwrap().len(), 2);
        assert_eq!(app.get("/api/v1/seats?target=maybe").await.body["error"]["code"], "invalid_query");
    }

    async fn volunteers_get_their_pin_once_and_never_again(store) {
        let app = TestApp::new(store).await;
        let r = app.json("POST", "/api/v1/volunteers", json!({"name": "Jo", "phone": "020 7946 0001", "team": "North"})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let pin = r.body["pin"].as_str().unwrap().to_owned();
        let id = r.body["volunteer"]["id"].as_i64().unwrap();
        assert_eq!(pin.len(), 6);
        assert_eq!(r.body["volunteer"]["phone"], "+442079460001");
        for reply in [app.get("/api/v1/volunteers").await, app.get(&format!("/api/v1/volunteers/{id}")).await] {
            assert!(!reply.text.contains(&pin) && !reply.text.contains("pin_hash") && !reply.text.contains("argon2"), "{}", reply.text);
        }
        let dup = app.json("POST", "/api/v1/volunteers", json!({"name": "Jo 2", "phone": "+44 20 7946 0001"})).await;
        assert_eq!((dup.status, dup.body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("volunteer_phone_taken")));
        let bad = app.json("POST", "/api/v1/volunteers", json!({"name": "", "phone": "12"})).await;
        assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
        let r = app.json("PATCH", &format!("/api/v1/volunteers/{id}"), json!({"team": "", "active": false})).await;
        assert_eq!((r.body["team"].is_null(), r.body["active"].as_bool()), (true, Some(false)));
        let new_pin = app.json("POST", &format!("/api/v1/volunteers/{id}/pin"), json!({})).await;
        assert_eq!(new_pin.status, StatusCode::OK);
        let (_, hash) = app.store.volunteer_by_phone(&phonebank::domain::PhoneNumber::from_e164("+442079460001").unwrap()).await.unwrap().unwrap();
        let new_pin = phonebank::domain::Pin::parse(new_pin.body["pin"].as_str().unwrap()).unwrap();
        assert!(new_pin.verify(&hash));
    }

    async fn members_upload_as_csv_and_are_looked_up_by_number_in_the_body(store) {
        load_seats(&store).await;
        let app = TestApp::new(store).await;
        let csv = "member_id,name,phone,constituency,membership\nM1,Alex,07700 900123,Hendon,full\nM2,Bad,123,Hendon,full\n";
        let r = app.raw("POST", "/api/v1/members/import", "text/csv", csv).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.body, json!({"imported": 1, "updated": 0, "unchanged": 0,
            "rejected": [{"line": 3, "reason": "phone number has too few or too many digits"}], "warnings": [], "shared_phone_rows": 0}));
        let r = app.raw("POST", "/api/v1/members/import", "application/json", csv).await;
        assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let r = app.raw("POST", "/api/v1/members/import", "text/csv", "name,phone\nA,1\n").await;
        assert_eq!((r.status, r.body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_file")));

        let r = app.get("/api/v1/members/M1").await;
        assert_eq!((r.body["phone"].as_str(), r.body["seat_name"].as_str()), (Some("+447700900123"), Some("Hendon")));
        let r = app.json("POST", "/api/v1/members/lookup", json!({"phone": "+44 7700 900123"})).await;
        assert_eq!(r.body["members"][0]["member_id"], "M1");
        let r = app.json("POST", "/api/v1/members/lookup", json!({"phone": "07700 900999"})).await;
        assert_eq!(r.body["members"], json!([]));
        let r = app.json("POST", "/api/v1/members/lookup", json!({"phone": "4.47701E+11"})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    }

    async fn suppressions_are_added_looked_up_and_removed_with_an_audit(store) {
        load_seats(&store).await;
        let app = TestApp::new(store).await;
        common::import_members_str(&app.store, "member_id,name,phone,constituency\nM1,Alex,07700 900123,Hendon\n").await;
        let r = app.json("POST", "/api/v1/suppressions", json!({"phone": "07700 900123", "reason": "asked by email"})).await;
        assert_eq!((r.status, r.body["suppressed"].as_bool(), r.body["changed"].as_bool()), (StatusCode::OK, Some(true), Some(true)));
        let r = app.json("POST", "/api/v1/suppressions", json!({"phone": "+447700900123", "reason": "again"})).await;
        assert_eq!(r.body["changed"], false);
        assert_eq!(app.get("/api/v1/members/M1").await.body["opted_out"], true);
        let r = app.json("POST", "/api/v1/suppressions/remove", json!({"phone": "07700 900123", "note": ""})).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
        let r = app.json("POST", "/api/v1/suppressions/remove", json!({"phone": "07700 900123", "note": "rejoined in writing"})).await;
        assert_eq!((r.body["suppressed"].as_bool(), r.body["changed"].as_bool()), (Some(false), Some(true)));
        let r = app.json("POST", "/api/v1/suppressions/lookup", json!({"phone": "07700 900123"})).await;
        let audit = r.body["audit"].as_array().unwrap();
        assert_eq!(audit.len(), 2);
        assert_eq!((audit[1]["action"].as_str(), audit[1]["actor"].as_str()), (Some("remove"), Some("test organiser")));
    }

    async fn the_campaign_report_lists_seats_with_members(store) {
        load_seats(&store).await;
        let app = TestApp::new(store).await;
        common::import_members_str(&app.store, "member_id,name,phone,constituency\nM1,A,07700 900001,Hendon\nM2,B,07700 900002,Hendon\nM3,C,07700 900003,Aberdeen North\n").await;
        app.json("PATCH", "/api/v1/seats/E14001290", json!({"is_target": true})).await;
        let id = app.json("POST", "/api/v1/campaigns", campaign_body("GE")).await.body["id"].as_i64().unwrap();
        let r = app.get(&format!("/api/v1/campaigns/{id}/report")).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let seats = r.body["seats"].as_array().unwrap();
        let names: Vec<&str> = seats.iter().map(|s| s["name"].as_str().unwrap()).collect();
        assert_eq!(names, vec!["Holborn and St Pancras", "Aberdeen North", "Hendon"]);
        assert_eq!(r.body["totals"]["members"], 3);
    }

    async fn health_readiness_and_metrics_answer_without_a_token(store) {
        let app = TestApp::new(store).await;
        assert_eq!(app.unauthenticated("GET", "/healthz", None).await.text, "ok");
        assert_eq!(app.unauthenticated("GET", "/readyz", None).await.status, StatusCode::OK);
        app.get("/api/v1/campaigns").await;
        let metrics = app.unauthenticated("GET", "/metrics", None).await;
        assert!(metrics.text.contains("phonebank_http_requests_total"), "{}", metrics.text);
        assert!(metrics.text.contains("route=\"/api/v1/campaigns\""));
    }

    async fn oversized_bodies_are_refused_with_413(store) {
        let settings = phonebank::config::Settings { max_body_bytes: 1024, max_upload_bytes: 2048, ..Default::default() };
        let app = TestApp::with_settings(store, settings).await;
        let mut body = campaign_body("GE");
        body["name"] = json!("x".repeat(4000));
        let r = app.json("POST", "/api/v1/campaigns", body).await;
        assert_eq!((r.status, r.body["error"]["code"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")));
        let r = app.raw("POST", "/api/v1/members/import", "text/csv", "member_id,name,phone,constituency\n".repeat(100)).await;
        assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    async fn every_documented_route_exists_and_requires_a_token(store) {
        let app = TestApp::new(store).await;
        let doc = app.unauthenticated("GET", "/api/v1/openapi.json", None).await.body;
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().unwrap();
        let mut documented = Vec::new();
        for (path, item) in paths {
            for method in item.as_object().unwrap().keys() {
                let concrete = path.replace("{id}", "1").replace("{code}", "E14001279").replace("{member_id}", "M1");
                let r = app.unauthenticated(&method.to_uppercase(), &concrete, None).await;
                assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method} {path} is documented but answered {}", r.status);
                documented.push(format!("{} {path}", method.to_uppercase()));
            }
        }
        documented.sort();
        let mut expected = vec![
            "GET /api/v1/seats", "GET /api/v1/seats/{code}", "PATCH /api/v1/seats/{code}",
            "GET /api/v1/campaigns", "POST /api/v1/campaigns", "GET /api/v1/campaigns/{id}",
            "PUT /api/v1/campaigns/{id}", "DELETE /api/v1/campaigns/{id}", "POST /api/v1/campaigns/{id}/start",
            "POST /api/v1/campaigns/{id}/pause", "POST /api/v1/campaigns/{id}/finish", "GET /api/v1/campaigns/{id}/report", "GET /api/v1/campaigns/{id}/report/live",
            "GET /api/v1/campaigns/{id}/targeting", "PUT /api/v1/campaigns/{id}/targeting",
            "POST /api/v1/members/import", "GET /api/v1/members/{member_id}", "POST /api/v1/members/lookup",
            "GET /api/v1/volunteers", "POST /api/v1/volunteers", "GET /api/v1/volunteers/{id}",
            "PATCH /api/v1/volunteers/{id}", "DELETE /api/v1/volunteers/{id}", "POST /api/v1/volunteers/{id}/pin",
            "POST /api/v1/volunteers/{id}/call",
            "POST /api/v1/suppressions", "POST /api/v1/suppressions/lookup", "POST /api/v1/suppressions/remove",
            "GET /api/v1/suppressions", "POST /api/v1/campaigns/{id}/sms/send", "GET /api/v1/campaigns/{id}/sms",
            "GET /api/v1/sms/reviews", "GET /api/v1/sms/reviews/{id}", "POST /api/v1/sms/reviews/{id}/resolve",
            "POST /api/v1/sms/reviews/{id}/dismiss",
        ];
        expected.sort();
        assert_eq!(documented, expected);
    }
}

fn invalid_fields(r: &common::app::Reply) -> Vec<String> {
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_fields")),
        "{}",
        r.text
    );
    r.body["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap().to_owned())
        .collect()
}

both_backends! {
    // Everything here is spoken inside <Say> or sent in a text; XML 1.0 cannot carry C0
    // control characters even escaped, so the provider would drop the volunteer.
    async fn control_characters_in_spoken_or_texted_fields_are_refused_by_field(store) {
        let app = TestApp::new(store).await;
        let mut body = campaign_body("Hendon\u{1}Calls");
        body["script"]["questions"][0]["text"] = json!("Vote?\u{B}");
        body["script"]["questions"][0]["options"][1]["label"] = json!("No\u{0}");
        body["script"]["questions"][0]["options"][0]["sms_keywords"] = json!(["y\u{1F}"]);
        let r = app.json("POST", "/api/v1/campaigns", body).await;
        let fields = invalid_fields(&r);
        for f in ["name", "script.questions[0].text", "script.questions[0].options[1].label", "script.questions[0].options[0].sms_keywords[0]"] {
            assert!(fields.iter().any(|x| x == f), "{f} not in {fields:?}");
        }
        assert!(r.text.contains("U+0001"), "{}", r.text);
        let mut body = campaign_body("Hendon Calls");
        body["name"] = json!("Hendon\tCalls");
        assert_eq!(invalid_fields(&app.json("POST", "/api/v1/campaigns", body).await), vec!["name"]);

        // A question may run over several lines; tab and line breaks are fine there.
        let mut body = campaign_body("Hendon Calls");
        body["script"]["questions"][0]["text"] = json!("Can we count on your vote?\nTake your time.");
        let r = app.json("POST", "/api/v1/campaigns", body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let id = r.body["id"].as_i64().unwrap();
        let r = app.json("PUT", &format!("/api/v1/campaigns/{id}"), campaign_body("Hendon\u{FFFF}")).await;
        assert_eq!(invalid_fields(&r), vec!["name"]);

        let r = app.json("POST", "/api/v1/volunteers", json!({"name": "Vic\u{1}", "phone": "020 7946 0001"})).await;
        assert_eq!(invalid_fields(&r), vec!["name"]);
        let r = app.json("POST", "/api/v1/volunteers", json!({"name": "Vic", "phone": "020 7946 0001", "team": "North\u{0}"})).await;
        assert_eq!(invalid_fields(&r), vec!["team"]);
        let r = app.json("POST", "/api/v1/volunteers", json!({"name": "Vic", "phone": "020 7946 0001"})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let vid = r.body["volunteer"]["id"].as_i64().unwrap();
        let r = app.json("PATCH", &format!("/api/v1/volunteers/{vid}"), json!({"name": "Vic\u{B}Smith"})).await;
        assert_eq!(invalid_fields(&r), vec!["name"]);
        assert_eq!(app.get(&format!("/api/v1/volunteers/{vid}")).await.body["name"], "Vic");
    }

    // Notes and reasons are never spoken, but they reach CSV exports, logs and terminals.
    async fn control_characters_in_notes_are_refused_and_line_breaks_kept(store) {
        let app = TestApp::new(store).await;
        let r = app.json("POST", "/api/v1/suppressions", json!({"phone": "07700 900123", "reason": "asked\u{1b}[2J"})).await;
        assert_eq!(invalid_fields(&r), vec!["reason"]);
        let r = app.json("POST", "/api/v1/suppressions", json!({"phone": "07700 900123", "reason": "x".repeat(501)})).await;
        assert_eq!(invalid_fields(&r), vec!["reason"]);
        let r = app.json("POST", "/api/v1/suppressions", json!({"phone": "07700 900123", "reason": "asked by letter\nsigned"})).await;
        assert!(r.status.is_success(), "{}", r.text);
        let r = app.json("POST", "/api/v1/suppressions/remove", json!({"phone": "07700 900123", "note": "ok\u{7}"})).await;
        assert_eq!(invalid_fields(&r), vec!["note"]);
        let r = app.json("POST", "/api/v1/suppressions/lookup", json!({"phone": "07700 900123"})).await;
        assert_eq!(r.body["suppressed"], true, "{}", r.text);
    }

    // Calling hours are a legal and reputational floor, not only a preference: no window
    // may start before 08:00 or end after 21:00 in the member's time zone.
    async fn calling_hours_outside_eight_to_nine_are_refused_by_field(store) {
        let app = TestApp::new(store).await;
        let mut body = campaign_body("Late Calls");
        body["calling_hours"] = json!({"days": {"mon": {"start": "00:00", "end": "23:59"}, "tue": {"start": "10:00", "end": "20:00"}}});
        let r = app.json("POST", "/api/v1/campaigns", body).await;
        assert_eq!(invalid_fields(&r), vec!["calling_hours.days.mon"]);
        assert!(r.text.contains("08:00-21:00"), "{}", r.text);
        for (start, end) in [("07:59", "12:00"), ("12:00", "21:01"), ("06:00", "23:00")] {
            let mut body = campaign_body("Late Calls");
            body["calling_hours"] = json!({"days": {"sat": {"start": start, "end": end}}});
            let r = app.json("POST", "/api/v1/campaigns", body).await;
            assert_eq!(invalid_fields(&r), vec!["calling_hours.days.sat"], "{start}-{end}");
        }
        let mut body = campaign_body("Full Day");
        body["calling_hours"] = json!({"days": {"mon": {"start": "08:00", "end": "21:00"}}});
        let r = app.json("POST", "/api/v1/campaigns", body.clone()).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let id = r.body["id"].as_i64().unwrap();
        body["calling_hours"]["days"]["mon"]["end"] = json!("22:00");
        let r = app.json("PUT", &format!("/api/v1/campaigns/{id}"), body).await;
        assert_eq!(invalid_fields(&r), vec!["calling_hours.days.mon"]);
    }

    // A volunteer who rang in has call history (the session, even one that ended at the
    // PIN prompt): the documented 409, and deactivating them works.
    async fn a_volunteer_who_rang_in_cannot_be_deleted_only_deactivated(store) {
        load_seats(&store).await;
        let app = voice_app(store, Clock::manual(tuesday_evening())).await;
        let volunteer = |name: &str, phone: &str| json!({"name": name, "phone": phone});
        let v = app.json("POST", "/api/v1/volunteers", volunteer("Vic", "+442079460500")).await;
        let id = v.body["volunteer"]["id"].as_i64().unwrap();
        let never = app.json("POST", "/api/v1/volunteers", volunteer("Nev", "+442079460501")).await;
        let never = never.body["volunteer"]["id"].as_i64().unwrap();

        let mut call = Call::new(&app, 1, "+442079460500");
        let doc = call.start().await;
        assert!(doc.gather().is_some(), "{}", doc.raw);
        let r = app.delete(&format!("/api/v1/volunteers/{id}")).await;
        assert_eq!((r.status, r.body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("volunteer_has_calls")), "{}", r.text);
        call.hang_up().await;
        let r = app.delete(&format!("/api/v1/volunteers/{id}")).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
        let r = app.json("PATCH", &format!("/api/v1/volunteers/{id}"), json!({"active": false})).await;
        assert_eq!((r.status, r.body["active"].as_bool()), (StatusCode::OK, Some(false)), "{}", r.text);

        assert_eq!(app.delete(&format!("/api/v1/volunteers/{never}")).await.status, StatusCode::NO_CONTENT);
        assert_eq!(app.get(&format!("/api/v1/volunteers/{never}")).await.status, StatusCode::NOT_FOUND);
    }

    // An organiser who started a campaign and stopped it before anyone was contacted can
    // delete it: its queue, seat schedule, targeting and still-queued texts go with it.
    // A running campaign must be paused first, and one that texted someone is kept.
    async fn a_started_campaign_that_contacted_nobody_can_be_deleted(store) {
        load_seats(&store).await;
        common::import_members_str(&store, "member_id,name,phone,constituency\nM1,Ann,+447700900001,Hendon\nM2,Bob,+447700900002,Hendon\n").await;
        let app = voice_app(store, Clock::manual(tuesday_evening())).await;
        let count = |table: &'static str, id: i64| {
            let pool = app.store.pool().clone();
            async move {
                sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(format!("select count(*) from {table} where campaign_id = $1")))
                    .bind(id).fetch_one(&pool).await.unwrap()
            }
        };
        let mut ids = Vec::new();
        for name in ["Never Called", "Texted"] {
            let c = app.json("POST", "/api/v1/campaigns", campaign_body(name)).await;
            let id = c.body["id"].as_i64().unwrap();
            assert_eq!(app.json("POST", &format!("/api/v1/campaigns/{id}/start"), json!({})).await.status, StatusCode::OK);
            let r = app.json("PUT", &format!("/api/v1/campaigns/{id}/targeting"), json!({"non_targets": "blend"})).await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            let r = app.json("POST", &format!("/api/v1/campaigns/{id}/sms/send"), json!({"question": "support", "audience": {"kind": "all"}})).await;
            assert_eq!((r.status.as_u16(), r.body["queued"].as_i64()), (202, Some(2)), "{}", r.text);
            ids.push(id);
        }
        let (never, texted) = (ids[0], ids[1]);
        for table in ["call_queue", "seat_schedule", "campaign_targeting", "sms_outbox"] {
            assert!(count(table, never).await > 0, "{table} has no rows: the test proves nothing");
        }

        let r = app.delete(&format!("/api/v1/campaigns/{never}")).await;
        assert_eq!((r.status, r.body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("campaign_active")), "{}", r.text);
        app.json("POST", &format!("/api/v1/campaigns/{never}/pause"), json!({})).await;
        let r = app.delete(&format!("/api/v1/campaigns/{never}")).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
        assert_eq!(app.get(&format!("/api/v1/campaigns/{never}")).await.status, StatusCode::NOT_FOUND);
        for table in ["call_queue", "seat_schedule", "campaign_targeting", "sms_outbox"] {
            assert_eq!(count(table, never).await, 0, "{table}");
        }

        // A text handed to the provider is a contact: the campaign stays.
        sqlx::query("update sms_outbox set state = 'sent', sent_at = 1 where campaign_id = $1 and id = (select min(id) from sms_outbox where campaign_id = $1)")
            .bind(texted).execute(app.store.pool()).await.unwrap();
        app.json("POST", &format!("/api/v1/campaigns/{texted}/pause"), json!({})).await;
        let r = app.delete(&format!("/api/v1/campaigns/{texted}")).await;
        assert_eq!((r.status, r.body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("campaign_has_texts")), "{}", r.text);
        assert_eq!(count("call_queue", texted).await, 2);
        assert_eq!(app.get(&format!("/api/v1/campaigns/{texted}")).await.status, StatusCode::OK);
    }
}
