//! Synthetic members for the demo: realistic names and membership types, spread over
//! the real seats, on Ofcom's drama numbers only (so no real person can be reached).
//!
//! There are 20 drama blocks of 1,000 numbers. The London block (020 7946 0xxx) is kept
//! for the campaign's own number and the volunteers, which leaves 19,000 numbers for
//! members; beyond that, members share a number with an earlier member as a household
//! would (same seat, same surname), which the server must handle anyway.

use rand::rngs::StdRng;
use rand::seq::IndexedRandom as _;
use rand::{Rng as _, SeedableRng as _};

/// Member blocks, E.164 prefixes of 10 digits; each is followed by three more digits.
pub const MEMBER_BLOCKS: [&str; 19] = [
    "+441134960",
    "+441144960",
    "+441154960",
    "+441164960",
    "+441174960",
    "+441184960",
    "+441214960",
    "+441314960",
    "+441414960",
    "+441514960",
    "+441614960",
    "+441914980",
    "+442896496",
    "+442920180",
    "+441632960",
    "+447700900",
    "+448081570",
    "+449098790",
    "+443069990",
];

/// The campaign's own number (020 7946 0000).
pub const CAMPAIGN_NUMBER: &str = "+442079460000";

/// Volunteer `i` (from 0) rings from 020 7946 0001 upwards.
pub fn volunteer_number(i: usize) -> String {
    format!("+44207946{:04}", (i % 999) + 1)
}

const FIRST: &[&str] = &[
    "Olivia", "Amelia", "Isla", "Ava", "Mia", "Ivy", "Lily", "Freya", "Grace", "Sophia", "Evie",
    "Poppy", "Ella", "Aisha", "Zara", "Niamh", "Siobhan", "Eilidh", "Cerys", "Ffion", "Margaret",
    "Susan", "Linda", "Patricia", "Janet", "Carol", "Helen", "Sandra", "Fatima", "Priya", "Noah",
    "Oliver", "George", "Arthur", "Muhammad", "Leo", "Harry", "Oscar", "Archie", "Henry", "Jack",
    "Charlie", "Jacob", "Thomas", "Rhys", "Dylan", "Callum", "Ewan", "Cormac", "Declan", "David",
    "John", "Michael", "Peter", "Robert", "Stephen", "Paul", "Andrew", "Ravi", "Tariq", "Kwame",
    "Tomasz", "Ahmed", "Samuel", "Joseph",
];

const LAST: &[&str] = &[
    "Smith",
    "Jones",
    "Williams",
    "Taylor",
    "Brown",
    "Davies",
    "Evans",
    "Wilson",
    "Thomas",
    "Johnson",
    "Roberts",
    "Robinson",
    "Thompson",
    "Wright",
    "Walker",
    "White",
    "Edwards",
    "Hughes",
    "Green",
    "Hall",
    "Lewis",
    "Harris",
    "Clarke",
    "Patel",
    "Jackson",
    "Wood",
    "Turner",
    "Martin",
    "Cooper",
    "Hill",
    "Ward",
    "Morris",
    "Moore",
    "Clark",
    "Lee",
    "King",
    "Baker",
    "Harrison",
    "Morgan",
    "Allen",
    "James",
    "Scott",
    "Phillips",
    "Watson",
    "Davis",
    "Parker",
    "Price",
    "Bennett",
    "Young",
    "Griffiths",
    "Mitchell",
    "Kelly",
    "Cook",
    "Carter",
    "Richardson",
    "Bailey",
    "Collins",
    "Bell",
    "Shaw",
    "Murphy",
    "Miller",
    "Cox",
    "Richards",
    "Khan",
    "Marshall",
    "Anderson",
    "Simpson",
    "Ellis",
    "Adams",
    "Singh",
    "Begum",
    "Wilkinson",
    "Foster",
    "Chapman",
    "Powell",
    "Webb",
    "Rogers",
    "Gray",
    "Mason",
    "Ali",
    "Hussain",
    "Campbell",
    "Matthews",
    "Owen",
    "Palmer",
    "Holmes",
    "Mills",
    "Barnes",
    "Knight",
    "Lloyd",
    "Butler",
    "Russell",
    "Barker",
    "Fisher",
    "Stevens",
    "Jenkins",
    "Murray",
    "Dixon",
    "Harvey",
    "Graham",
    "Pearson",
    "Ahmed",
    "Fletcher",
    "Walsh",
    "Kaur",
    "Gibson",
    "Howard",
    "Andrews",
    "Stewart",
    "Elliott",
    "Reynolds",
    "Saunders",
    "Payne",
    "Fox",
    "Ford",
    "Pearce",
    "Day",
    "Brooks",
    "West",
    "Lawrence",
    "Cole",
    "Atkinson",
    "Bradley",
    "Spencer",
    "Gill",
    "Dawson",
    "Ball",
    "Burton",
    "O'Brien",
    "Watts",
    "Rose",
    "Booth",
    "Perry",
    "Ryan",
    "Grant",
    "Wells",
    "Armstrong",
    "Francis",
    "Rees",
    "Hayes",
    "Hunt",
    "Kowalski",
    "Nowak",
    "Okafor",
    "Mensah",
    "Chen",
    "Nguyen",
    "MacDonald",
];

/// A seat as the generator needs it.
#[derive(Debug, Clone)]
pub struct SeatPick {
    pub code: String,
    pub electorate: i64,
}

/// One generated member.
#[derive(Debug, Clone)]
pub struct Generated {
    pub member_id: String,
    pub name: String,
    /// E.164.
    pub phone: String,
    pub seat: String,
    pub membership: &'static str,
}

/// `n` members: `target_share` of them spread evenly over `targets` (the campaign has
/// recruited hard in its marginals), the rest over every seat in proportion to its
/// electorate. Deterministic for a seed.
pub fn generate(
    n: usize,
    seats: &[SeatPick],
    targets: &[String],
    target_share: f64,
    seed: u64,
) -> Vec<Generated> {
    let mut rng = StdRng::seed_from_u64(seed);
    let total_electorate: i64 = seats.iter().map(|s| s.electorate.max(1)).sum();
    let unique = MEMBER_BLOCKS.len() * 1000;
    let mut out: Vec<Generated> = Vec::with_capacity(n);
    for i in 0..n {
        let membership = match rng.random_range(0..100) {
            0..65 => "full",
            65..95 => "supporter",
            _ => "affiliate",
        };
        let first = FIRST.choose(&mut rng).copied().unwrap_or("Alex");
        if i >= unique {
            // A household: shares an earlier member's number, seat and surname.
            let j = (i * 7919) % unique;
            let (phone, seat, surname) = {
                let h = &out[j];
                let surname = h.name.rsplit(' ').next().unwrap_or("Smith").to_owned();
                (h.phone.clone(), h.seat.clone(), surname)
            };
            let mut first = first;
            while out[j].name.starts_with(&format!("{first} ")) {
                first = FIRST.choose(&mut rng).copied().unwrap_or("Sam");
            }
            out.push(Generated {
                member_id: format!("D{i:07}"),
                name: format!("{first} {surname}"),
                phone,
                seat,
                membership,
            });
            continue;
        }
        let seat = if !targets.is_empty() && rng.random_bool(target_share.clamp(0.0, 1.0)) {
            targets[rng.random_range(0..targets.len())].clone()
        } else {
            let mut pick = rng.random_range(0..total_electorate.max(1));
            seats
                .iter()
                .find(|s| {
                    pick -= s.electorate.max(1);
                    pick < 0
                })
                .or(seats.last())
                .map(|s| s.code.clone())
                .unwrap_or_default()
        };
        let last = LAST.choose(&mut rng).copied().unwrap_or("Smith");
        out.push(Generated {
            member_id: format!("D{i:07}"),
            name: format!("{first} {last}"),
            phone: format!(
                "{}{:03}",
                MEMBER_BLOCKS[i % MEMBER_BLOCKS.len()],
                (i / MEMBER_BLOCKS.len()) % 1000
            ),
            seat,
            membership,
        });
    }
    out
}

/// The members as the import file an organiser would upload (national number format,
/// as people write them).
pub fn to_csv(members: &[Generated]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(["member_id", "name", "phone", "constituency", "membership"]);
    for m in members {
        let national = format!("0{}", m.phone.trim_start_matches("+44"));
        let _ = w.write_record([
            m.member_id.as_str(),
            m.name.as_str(),
            national.as_str(),
            m.seat.as_str(),
            m.membership,
        ]);
    }
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seats() -> Vec<SeatPick> {
        (0..10)
            .map(|i| SeatPick {
                code: format!("E1400{i:04}"),
                electorate: 70_000 + i * 1000,
            })
            .collect()
    }

    #[test]
    fn numbers_are_drama_numbers_and_unique_until_the_blocks_run_out() {
        let members = generate(19_500, &seats(), &[], 0.0, 7);
        let drama = regex::Regex::new(
            r"^\+44(11[3-8]4960|1[2-6]14960|2079460|1914980|2896496|2920180|1632960|7700900|8081570|9098790|3069990)\d{3}$",
        )
        .unwrap();
        assert!(members.iter().all(|m| drama.is_match(&m.phone)));
        assert!(members.iter().all(|m| !m.phone.starts_with("+442079460")));
        let unique: std::collections::HashSet<_> =
            members[..19_000].iter().map(|m| &m.phone).collect();
        assert_eq!(unique.len(), 19_000);
        // Households beyond: same number, same seat, different first name.
        let h = &members[19_100];
        let j = members[..19_000]
            .iter()
            .find(|m| m.phone == h.phone)
            .unwrap();
        assert_eq!(h.seat, j.seat);
        assert_ne!(h.name, j.name);
    }

    #[test]
    fn the_csv_imports_as_written() {
        let csv = to_csv(&generate(3, &seats(), &[], 0.0, 1));
        assert!(csv.starts_with("member_id,name,phone,constituency,membership\n"));
        assert!(csv.contains(",0113"));
    }
}
