//! Hand-worked block maps.

use super::*;

fn input(subnet: &str, used: &[&str]) -> FragInput {
    FragInput {
        subnet: Some(subnet.parse().unwrap()),
        used: used.iter().map(|u| (u.parse().unwrap(), "test".to_string())).collect(),
        ..FragInput::default()
    }
}

#[test]
fn an_empty_slash_24_loses_its_first_and_last_block() {
    // .0-.3 and .255 are reserved: blocks 0 and 15 can never be prefixes.
    let r = analyse(&input("10.0.0.0/24", &[])).unwrap();
    assert_eq!(r.block_map, vec!["R..............R"]);
    assert_eq!((r.free_ips, r.free_prefixes), (251, 14));
    // 251 free, 224 of them in free blocks: 27 stranded (11 in block 0, 15 in block 15... plus).
    assert_eq!(r.stranded_ips, 251 - 14 * 16);
    assert_eq!(r.fragmentation, ((27.0f64 / 251.0) * 1000.0).round() / 1000.0);
}

#[test]
fn one_address_per_block_strands_everything() {
    let used: Vec<String> = (1..15).map(|b| format!("10.0.0.{}", b * 16 + 5)).collect();
    let used: Vec<&str> = used.iter().map(String::as_str).collect();
    let r = analyse(&input("10.0.0.0/24", &used)).unwrap();
    assert_eq!(r.block_map, vec!["R++++++++++++++R"]);
    assert_eq!((r.free_ips, r.free_prefixes, r.stranded_ips), (237, 0, 237));
    assert_eq!(r.fragmentation, 1.0);
}

#[test]
fn a_slash_26_map_with_used_full_and_reserved_blocks() {
    let mut used: Vec<String> = (16..32).map(|i| format!("10.0.0.{i}")).collect();
    used.push("10.0.0.40".into());
    let used: Vec<&str> = used.iter().map(String::as_str).collect();
    let mut i = input("10.0.0.0/26", &used);
    i.reservations.push(Reservation { cidr: "10.0.0.48/28".parse().unwrap(), kind: ReservationKind::Explicit });
    let r = analyse(&i).unwrap();
    // block 0 reserved (.0-.3), block 1 full, block 2 partial (.40), block 3 explicit (and .63 reserved).
    assert_eq!(r.block_map, vec!["R#+R"]);
    assert_eq!(r.free_prefixes, 0);
    // free: block 0 has 12, block 2 has 15, block 3 is explicit or reserved.
    assert_eq!(r.free_ips, 12 + 15);
}

#[test]
fn prefix_reservations_show_and_count() {
    let mut i = input("10.0.0.0/24", &[]);
    i.reservations.push(Reservation { cidr: "10.0.0.64/26".parse().unwrap(), kind: ReservationKind::Prefix });
    let r = analyse(&i).unwrap();
    assert_eq!(r.block_map, vec!["R...PPPP.......R"]);
    assert_eq!(r.free_prefixes, 14);
    assert_eq!(r.free_ips, 251 - 64, "single addresses never come from a prefix reservation");
}

#[test]
fn advice_reserves_only_wholly_free_blocks() {
    // Blocks 1..=7 partly used; 8..=14 free. Four prefixes fit in 10.0.0.128/26 (blocks 8-11).
    let used: Vec<String> = (1..8).map(|b| format!("10.0.0.{}", b * 16 + 1)).collect();
    let used: Vec<&str> = used.iter().map(String::as_str).collect();
    let mut i = input("10.0.0.0/24", &used);
    i.subnet_id = Some("subnet-0aaa".into());
    i.want_prefixes = Some(4);
    let r = analyse(&i).unwrap();
    let a = r.advice.unwrap();
    assert_eq!(a.cidrs, ["10.0.0.128/26".parse::<Ipv4Net>().unwrap()]);
    assert_eq!(a.free_blocks, 4);
    assert_eq!(
        a.commands,
        [
            "aws ec2 create-subnet-cidr-reservation --subnet-id subnet-0aaa --cidr 10.0.0.128/26 --reservation-type prefix"
        ]
    );
    // Seven: the three ranges of wholly free blocks, not a range with used addresses in it.
    i.want_prefixes = Some(7);
    let a = analyse(&i).unwrap().advice.unwrap();
    assert_eq!(a.cidrs, ["10.0.0.128/26", "10.0.0.192/27", "10.0.0.224/28"].map(|c| c.parse::<Ipv4Net>().unwrap()));
    i.want_prefixes = Some(8);
    let a = analyse(&i).unwrap().advice.unwrap();
    assert!(a.cidrs.is_empty(), "{a:?}");
    assert_eq!(a.free_blocks, 7);
}

#[test]
fn one_used_address_in_every_other_block_is_never_reserved_over() {
    // #8's case: a used address in every other /28; four prefixes asked.
    let used: Vec<String> = (0..16).step_by(2).map(|b| format!("10.0.0.{}", b * 16 + 5)).collect();
    let used: Vec<&str> = used.iter().map(String::as_str).collect();
    let mut i = input("10.0.0.0/24", &used);
    i.want_prefixes = Some(4);
    let a = analyse(&i).unwrap().advice.unwrap();
    assert_eq!(a.cidrs.len(), 4, "single free blocks, one reservation each: {a:?}");
    assert!(a.cidrs.iter().all(|c| c.prefix_len() == 28));
    // Asked for every free block of an empty /24 (224 of its 251 free addresses) while new
    // nodes need 32 primary addresses: refused.
    let mut j = input("10.0.0.0/24", &[]);
    j.want_prefixes = Some(14);
    j.keep_free = 32;
    let a = analyse(&j).unwrap().advice.unwrap();
    assert!(a.cidrs.is_empty() && a.note.as_deref().unwrap_or_default().contains("primary"), "{a:?}");
}

proptest::proptest! {
    /// Over random subnets and usage: a proposed reservation never holds a used or AWS-reserved
    /// address, never overlaps another, and leaves `keep_free` addresses auto-assignable.
    #[test]
    fn proposals_hold_only_wholly_free_blocks(
        len in 24u8..=26,
        used in proptest::collection::vec(0u32..1024, 0..60),
        want in 1u32..20,
        keep in 0u32..64,
    ) {
        let cidr: Ipv4Net = format!("10.0.0.0/{len}").parse().unwrap();
        let size = 1u32 << (32 - len);
        let used: Vec<String> = used.iter().map(|o| o % size).filter(|o| *o >= 4 && *o < size - 1)
            .map(|o| std::net::Ipv4Addr::from(u32::from(cidr.network()) + o).to_string()).collect();
        let used_refs: Vec<&str> = used.iter().map(String::as_str).collect();
        let mut i = input(&cidr.to_string(), &used_refs);
        i.want_prefixes = Some(want);
        i.keep_free = keep;
        let r = analyse(&i).unwrap();
        let a = r.advice.unwrap();
        let mut reserved = 0u32;
        for c in &a.cidrs {
            for ip in &used {
                let ip: std::net::Ipv4Addr = ip.parse().unwrap();
                proptest::prop_assert!(!c.contains(&ip), "{c} holds used {ip}");
            }
            proptest::prop_assert!(!c.contains(&cidr.network()) && !c.contains(&cidr.broadcast()), "{c} holds a reserved address");
            for d in &a.cidrs {
                proptest::prop_assert!(c == d || (!c.contains(d) && !d.contains(c)), "{c} overlaps {d}");
            }
            reserved += 1 << (28 - c.prefix_len());
        }
        if !a.cidrs.is_empty() {
            proptest::prop_assert_eq!(reserved, want);
            proptest::prop_assert!(r.free_ips >= keep + 16 * want, "{} free, {} kept, {} reserved", r.free_ips, keep, want);
        }
    }
}

#[test]
fn bad_input_names_every_value() {
    let mut i = input("10.0.0.0/24", &["10.0.1.5", "10.0.0.0", "10.0.0.9"]);
    i.used_prefixes.push(("10.0.0.8/28".parse().unwrap(), "prefix".into()));
    let err = analyse(&i).unwrap_err();
    assert_eq!(err.0.len(), 3, "{err}");
    assert!(err.to_string().contains("10.0.1.5 is not in subnet"));
    assert!(err.to_string().contains("10.0.0.0 is an address AWS reserves"));
    assert!(err.to_string().contains("10.0.0.8/28 is not an aligned /28"));
    let err = parse_used("used.txt", "10.0.0.5\n# note\n\nbanana\n10.0.0.300 # x\n").unwrap_err();
    assert_eq!(
        err.0,
        vec!["used.txt:4: \"banana\" is not an IPv4 address", "used.txt:5: \"10.0.0.300\" is not an IPv4 address"]
    );
    assert_eq!(parse_reservation("10.0.0.64/26:prefix").unwrap().kind, ReservationKind::Prefix);
    assert!(parse_reservation("10.0.0.64/26:maybe").unwrap_err().contains("maybe"));
}
