//! The provider's webhook signature (`X-Twilio-Signature`): base64 HMAC-SHA1, keyed with
//! the auth token, over the URL the provider requested followed by every POST parameter
//! sorted by name (repeated names: distinct values, sorted), each as `name` + `value`.
//!
//! The URL is rebuilt from the *configured public URL*, never from `Host`: a TLS proxy in
//! front changes both scheme and host. The provider is inconsistent about default ports,
//! so, like the official validators, a signature over the URL with the port stripped or
//! with the default port added is accepted too.

use std::collections::BTreeMap;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

/// Parameters as received, in any order; repeated names are kept.
pub type Params = [(String, String)];

/// The signature the provider would send for `url` and `params`.
pub fn sign(token: &str, url: &str, params: &Params) -> String {
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(token.as_bytes())
        .expect("HMAC accepts a key of any length");
    mac.update(url.as_bytes());
    let mut sorted: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (k, v) in params {
        sorted.entry(k.as_str()).or_default().push(v.as_str());
    }
    for (name, mut values) in sorted {
        values.sort_unstable();
        values.dedup();
        for v in values {
            mac.update(name.as_bytes());
            mac.update(v.as_bytes());
        }
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Does `signature` match `url` + `params` under any accepted port variant?
pub fn verify(token: &str, url: &str, params: &Params, signature: &str) -> bool {
    let candidates = url_variants(url);
    // Evaluate every candidate (no early exit) so timing does not say which one matched.
    candidates.iter().fold(false, |ok, candidate| {
        let expected = sign(token, candidate, params);
        ok | bool::from(expected.as_bytes().ct_eq(signature.as_bytes()))
    })
}

/// The URL as given, with any port removed, and with the scheme's default port added.
/// A URL that cannot be parsed is used only as given.
fn url_variants(url: &str) -> Vec<String> {
    let mut out = vec![url.to_owned()];
    let Some((scheme, rest)) = url.split_once("://") else {
        return out;
    };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "https" => "443",
        "http" => "80",
        _ => return out,
    };
    // Authority ends at the first '/', '?' or '#'; userinfo ends at the last '@' in it.
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(i) => authority.split_at(i + 1),
        None => ("", authority),
    };
    // A port is digits after the last ':' that is not inside an IPv6 literal.
    let (host, port) = match hostport.rfind(':') {
        Some(i)
            if !hostport[i + 1..].is_empty()
                && hostport[i + 1..].bytes().all(|b| b.is_ascii_digit())
                && !hostport[i..].contains(']') =>
        {
            (&hostport[..i], Some(&hostport[i + 1..]))
        }
        _ => (hostport, None),
    };
    match port {
        Some(_) => out.push(format!("{scheme}://{userinfo}{host}{tail}")),
        None => out.push(format!("{scheme}://{userinfo}{host}:{default_port}{tail}")),
    }
    out
}

#[cfg(test)]
mod tests {
    //! The vectors are the official libraries' test data as listed in the provider
    //! reference (§4.5), each recomputed there independently.
    use super::*;

    const U: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn common() -> Vec<(String, String)> {
        p(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ])
    }

    /// URL, parameters, expected signature.
    type Vector = (&'static str, Vec<(String, String)>, &'static str);

    #[test]
    fn official_vectors_sign_exactly() {
        let cases: &[Vector] = &[
            (U, common(), "RSOYDt4T1cUTdK1PDd93/VVr8B8="),
            (
                "https://mycompany.com:443/myapp.php?foo=1&bar=2",
                common(),
                "kvajT1Ptam85bY51eRf/AJRuM3w=",
            ),
            (
                "http://mycompany.com:80/myapp.php?foo=1&bar=2",
                common(),
                "0ZXoZLH/DfblKGATFgpif+LLRf4=",
            ),
            (
                "http://mycompany.com:1234/myapp.php?foo=1&bar=2",
                common(),
                "Zmvh+3yNM1Phv2jhDCwEM3q5ebU=",
            ),
            (
                U,
                p(&[
                    ("Sid", "CA123"),
                    ("SidAccount", "AC123"),
                    ("Digits", "5678"),
                    ("Digits", "1234"),
                    ("Digits", "1234"),
                ]),
                "IK+Dwps556ElfBT0I3Rgjkr1wJU=",
            ),
            (
                "https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620",
                vec![],
                "a9nBmqA0ju/hNViExpshrM61xv4=",
            ),
            (
                "https://mycompany.com/myapp.php?bodySHA256=0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620",
                vec![],
                "y77kIzt2vzLz71DgmJGsen2scGs=",
            ),
            (
                "https://mycompany.com:443/myapp.php?foo=1&bar=2&bodySHA256=44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
                vec![],
                "Ldidvp12m26NI7eqEvxnEpkd9Hc=",
            ),
            (
                "https://user:pass@mycompany.com/myapp.php?foo=1&bar=2",
                common(),
                "CukzLTc1tT5dXEDIHm/tKBanW10=",
            ),
            (
                "https://user@mycompany.com/myapp.php?foo=1&bar=2",
                common(),
                "2YRLlVAflCqxaNicjMpJcSTgzSs=",
            ),
            (
                "https://user:pass@mycompany.com:443/myapp.php?foo=1&bar=2",
                common(),
                "ZQFR1PTIZXF2MXB8ZnKCvnnA+rI=",
            ),
            (
                "https://mycompany.com/myapp.php?foo=1&bar=2&Body=It%27s+amazing",
                common(),
                "TfZzewPq8wqrGlMfyAud8+/IvJ0=",
            ),
            (
                U,
                p(&[
                    ("MessagingBinding.Address", "+1415xxxxxxx"),
                    ("MessagingBinding.Address", "+1325xxxxxxx"),
                ]),
                "83O6e2vORAoJHUNzJjDWN1jz+BA=",
            ),
            (U, vec![], "zYQTYrRWXE7LtzbG4PfP7/bkkGo="),
            (
                "https://mycompany.com/myapp.php",
                common(),
                "1xaxFBvyzXYvWplzNOSs28HWO94=",
            ),
            (
                "https://mycompany.com/myapp.php?foo=1&bar=2&type=thiswontbeusedinthesignaturegeneratorandsoshouldbeignored",
                common(),
                "hYkNsTBttoNGkyCS0p+wWmQoRTg=",
            ),
            (
                "https://mycompany.com/myapp.php?foo=hello%20world&bar=test%2Bvalue",
                common(),
                "er2tvAP1Wx+iuTTE2BPgvEaN1cs=",
            ),
            (
                U,
                p(&[
                    ("Message", "Hello & goodbye! @#$%^*()"),
                    ("From", "+1 (415) 867-5309"),
                    ("Special", "unicode: ñáéíóú"),
                ]),
                "dCPiR4WtQ6QFN6pJh81CtlCcWLQ=",
            ),
            (
                U,
                p(&[
                    ("Digits", ""),
                    ("CallSid", "CA1234567890ABCDE"),
                    ("EmptyParam", ""),
                ]),
                "9HHp/OqQMEwdrVebHDdA/+tqjX8=",
            ),
            (
                U,
                p(&[
                    ("Digits", ""),
                    ("CallSid", "CA1234567890ABCDE"),
                    ("NullParam", ""),
                ]),
                "L9lTTwIlxM1xGAtLRwhOSZggRhM=",
            ),
            (
                U,
                p(&[
                    ("Zebra", "last"),
                    ("Alpha", "first"),
                    ("Beta", "second"),
                    ("Gamma", "third"),
                ]),
                "enveUe73ZTVLAekHxez3Qx6JuuQ=",
            ),
            (
                "https://mycompany.com/webhook/España?año=2023",
                common(),
                "G/Hx6mqqnjUNlPAoi2Sp9bGst0g=",
            ),
            (
                U,
                p(&[
                    ("callSid", "lowercase"),
                    ("CallSid", "uppercase"),
                    ("CALLSID", "allcaps"),
                ]),
                "jDK7WKT8wiNrwggd4ceTv4e1MJ4=",
            ),
            (
                "https://mycompany.com:443//myapp.php?foo=1&bar=2",
                common(),
                "A9lH3u16NjyiiM/+wylw5rirFUs=",
            ),
        ];
        for (url, params, expected) in cases {
            assert_eq!(sign("12345", url, params), *expected, "signing {url}");
            assert!(verify("12345", url, params, expected), "verifying {url}");
        }
    }

    #[test]
    fn port_variants_are_accepted_like_the_official_validators() {
        // "adds port on https/http": the signature was made over the :443 / :80 form.
        assert!(verify(
            "12345",
            U,
            &common(),
            "kvajT1Ptam85bY51eRf/AJRuM3w="
        ));
        assert!(verify(
            "12345",
            "http://mycompany.com/myapp.php?foo=1&bar=2",
            &common(),
            "0ZXoZLH/DfblKGATFgpif+LLRf4="
        ));
        // "removes port on https": a :1234 URL validates with the portless signature.
        assert!(verify(
            "12345",
            "https://mycompany.com:1234/myapp.php?foo=1&bar=2",
            &common(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        // Empty body hash vector only matches with :443 added to the portless URL.
        assert!(verify(
            "12345",
            "https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256=44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
            &[],
            "Ldidvp12m26NI7eqEvxnEpkd9Hc="
        ));
        // Old security-doc example.
        let old = p(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
        ]);
        assert_eq!(sign("12345", U, &old), "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
    }

    #[test]
    fn wrong_token_url_or_params_fail() {
        let sig = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";
        assert!(!verify("12346", U, &common(), sig));
        assert!(!verify(
            "12345",
            "https://mycompany.com/other.php",
            &common(),
            sig
        ));
        let mut tampered = common();
        tampered[2].1 = "9999".into();
        assert!(!verify("12345", U, &tampered, sig));
        let mut extra = common();
        extra.push(("Extra".into(), "1".into()));
        assert!(!verify("12345", U, &extra, sig));
        assert!(!verify("12345", U, &common(), ""));
        assert!(!verify("12345", U, &common(), "not base64 at all"));
    }

    #[test]
    fn body_hash_of_the_reference_json() {
        use sha2::{Digest, Sha256};
        let body = br#"{"property": "value", "boolean": true}"#;
        assert_eq!(
            hex::encode(Sha256::digest(body)),
            "0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620"
        );
        assert_eq!(
            hex::encode(Sha256::digest(b"{}")),
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }
}
