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
fn advice_finds_the_smallest_clean_range() {
    // Blocks 1..=7 partly used; 8..=14 free. Four prefixes fit in 10.0.0.128/26 (blocks 8-11).
    let used: Vec<String> = (1..8).map(|b| format!("10.0.0.{}", b * 16 + 1)).collect();
    let used: Vec<&str> = used.iter().map(String::as_str).collect();
    let mut i = input("10.0.0.0/24", &used);
    i.subnet_id = Some("subnet-0aaa".into());
    i.want_prefixes = Some(4);
    let r = analyse(&i).unwrap();
    let a = r.advice.unwrap();
    assert_eq!(a.cidr, Some("10.0.0.128/26".parse().unwrap()));
    assert_eq!(a.free_blocks, 4);
    assert_eq!(
        a.command.unwrap(),
        "aws ec2 create-subnet-cidr-reservation --subnet-id subnet-0aaa --cidr 10.0.0.128/26 --reservation-type prefix"
    );
    i.want_prefixes = Some(8);
    let a = analyse(&i).unwrap().advice.unwrap();
    assert_eq!(a.cidr, None);
    assert_eq!(a.free_blocks, 7);
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
