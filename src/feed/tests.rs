use super::*;
use time::macros::date;

fn zj() -> Region {
    Region::parse("330000").expect("province")
}
fn js() -> Region {
    Region::parse("320000").expect("province")
}

const USCC: &str = "91110000600037341L";
const PERSON: &str = "11010519491231002X";

fn grant(categories: Option<&[Category]>, regions: Option<&[Region]>, natural_persons: bool) -> GrantScope {
    GrantScope {
        categories: categories.map(|c| c.iter().copied().collect()),
        regions: regions.map(|r| r.iter().copied().collect()),
        sharing: [SharingClass::Unconditional].into_iter().collect(),
        disclosure: [DisclosureClass::Public].into_iter().collect(),
        natural_persons,
    }
}

fn facts(origin: Region, n: u8, category: Category, subject: &SubjectKey) -> Facts {
    Facts {
        origin,
        record_id: RecordId([n; 16]),
        category,
        sharing: SharingClass::Unconditional,
        disclosure: DisclosureClass::Public,
        subject: subject.index_bytes(),
        version: 1,
        repaired: false,
        revoked: false,
        publicity_end: Some(date!(2027 - 01 - 31)),
    }
}

fn company() -> SubjectKey {
    SubjectKey::Uscc(USCC.to_string())
}

#[test]
fn subjects_are_parsed_with_their_check_digits_and_masked() {
    assert_eq!(parse_subject("s", USCC), Ok(company()));
    assert_eq!(
        parse_subject("s", PERSON),
        Ok(SubjectKey::ResidentId(PERSON.to_string()))
    );
    let e = parse_subject("filter.subjects", "110105194912310021").expect_err("bad check digit");
    let text = e.to_string();
    assert!(text.contains("filter.subjects"), "{text}");
    assert!(!text.contains("110105194912310021"), "never in clear: {text}");
    assert_eq!(mask(PERSON), "1101**********002X");
    assert_eq!(mask(USCC), USCC, "a legal entity's code is not personal data");
    assert_eq!(
        mask_subject(&SubjectKey::ResidentId(PERSON.into())),
        "1101**********002X"
    );
}

#[test]
fn filters_name_the_bad_term() {
    assert_eq!(
        Filter::parse(&["penalty".into()], &[], &[], false),
        Err(FeedError::UnknownCategory("penalty".into()))
    );
    assert!(matches!(
        Filter::parse(&[], &[123], &[], false),
        Err(FeedError::BadRegion(_))
    ));
    let many = vec!["administrative_penalty".to_string(); FILTER_TERMS_MAX + 1];
    assert!(matches!(
        Filter::parse(&many, &[], &[], false),
        Err(FeedError::TooManyTerms {
            field: "categories",
            ..
        })
    ));
}

#[test]
fn a_plan_never_admits_outside_its_scope() {
    let scope = Scope {
        grants: vec![grant(Some(&[Category::AdministrativePenalty]), Some(&[zj()]), false)],
    };
    let plan = Plan::new(Filter::default(), scope.clone()).expect("plan");
    assert_eq!(plan.categories(), &[Category::AdministrativePenalty]);
    assert!(plan.admits(&facts(zj(), 1, Category::AdministrativePenalty, &company())));
    assert!(
        !plan.admits(&facts(js(), 1, Category::AdministrativePenalty, &company())),
        "region"
    );
    assert!(
        !plan.admits(&facts(zj(), 1, Category::AdministrativeLicence, &company())),
        "category"
    );
    let person = facts(
        zj(),
        2,
        Category::AdministrativePenalty,
        &SubjectKey::ResidentId(PERSON.into()),
    );
    assert!(!plan.admits(&person), "natural persons need an explicit grant");
    let mut conditional = facts(zj(), 3, Category::AdministrativePenalty, &company());
    conditional.sharing = SharingClass::Conditional;
    assert!(!plan.admits(&conditional), "sharing class");
    assert_eq!(
        Plan::new(
            Filter::parse(&["administrative_licence".into()], &[], &[], false).expect("filter"),
            scope.clone()
        ),
        Err(FeedError::NotGranted("category administrative_licence".into()))
    );
    assert!(matches!(
        Plan::new(
            Filter::parse(&[], &[], &[PERSON.into()], false).expect("filter"),
            scope.clone()
        ),
        Err(FeedError::NotGranted(_))
    ));
    assert_eq!(
        Plan::new(Filter::default(), Scope::default()),
        Err(FeedError::NotGranted("any record".into()))
    );
}

#[test]
fn grants_are_not_merged_field_by_field() {
    let scope = Scope {
        grants: vec![
            grant(Some(&[Category::AdministrativePenalty]), Some(&[zj()]), false),
            grant(Some(&[Category::AdministrativeLicence]), Some(&[js()]), false),
        ],
    };
    let plan = Plan::new(Filter::default(), scope).expect("plan");
    assert!(plan.admits(&facts(zj(), 1, Category::AdministrativePenalty, &company())));
    assert!(plan.admits(&facts(js(), 1, Category::AdministrativeLicence, &company())));
    assert!(!plan.admits(&facts(js(), 1, Category::AdministrativePenalty, &company())));
    assert!(!plan.admits(&facts(zj(), 1, Category::AdministrativeLicence, &company())));
}

#[test]
fn entries_become_events() {
    let today = date!(2026 - 06 - 01);
    let plan = Plan::new(
        Filter::default(),
        Scope {
            grants: vec![grant(None, None, false)],
        },
    )
    .expect("plan");
    let penalty = facts(zj(), 1, Category::AdministrativePenalty, &company());
    let e = plan
        .classify(
            (zj(), 1),
            &EntryFacts::Upsert {
                facts: penalty.clone(),
                current: None,
            },
            today,
        )
        .expect("event");
    assert_eq!(
        (e.change, e.status, e.entry),
        (Change::Published, Status::InPublicity, Some((zj(), 1)))
    );
    let amended = Facts {
        version: 2,
        ..penalty.clone()
    };
    let e = plan
        .classify(
            (zj(), 2),
            &EntryFacts::Upsert {
                facts: amended,
                current: None,
            },
            today,
        )
        .expect("event");
    assert_eq!(e.change, Change::Amended);
    let repaired_now = Facts {
        repaired: true,
        ..penalty.clone()
    };
    let repair = facts(zj(), 9, Category::CreditRepair, &company());
    let e = plan
        .classify(
            (zj(), 3),
            &EntryFacts::Repair {
                facts: repair.clone(),
                target: Some(repaired_now.clone()),
            },
            today,
        )
        .expect("event");
    assert_eq!(
        (e.change, e.status),
        (Change::Withdrawn(Withdrawal::Repaired), Status::Repaired)
    );
    assert_eq!(
        e.record.record_id, penalty.record_id,
        "the event is about the repaired record"
    );
    // Only repairs granted: the repair record itself is the event.
    let repairs_only = Plan::new(
        Filter::default(),
        Scope {
            grants: vec![grant(Some(&[Category::CreditRepair]), None, false)],
        },
    )
    .expect("plan");
    let e = repairs_only
        .classify(
            (zj(), 3),
            &EntryFacts::Repair {
                facts: repair,
                target: Some(repaired_now.clone()),
            },
            today,
        )
        .expect("event");
    assert_eq!(
        (e.change, e.record.category),
        (Change::Published, Category::CreditRepair)
    );
    let revoked = Facts {
        revoked: true,
        ..penalty.clone()
    };
    let e = plan
        .classify((zj(), 4), &EntryFacts::Revoke { target: Some(revoked) }, today)
        .expect("event");
    assert_eq!(
        (e.change, e.status),
        (Change::Withdrawn(Withdrawal::Revoked), Status::Revoked)
    );
    assert_eq!(plan.classify((zj(), 5), &EntryFacts::Nothing, today), None);
    // Public only: a publication already repaired is not sent; its withdrawal is.
    let public = Plan::new(
        Filter {
            public_only: true,
            ..Filter::default()
        },
        Scope {
            grants: vec![grant(None, None, false)],
        },
    )
    .expect("plan");
    assert_eq!(
        public.classify(
            (zj(), 1),
            &EntryFacts::Upsert {
                facts: penalty.clone(),
                current: Some(repaired_now.clone())
            },
            today
        ),
        None
    );
    assert!(public
        .classify(
            (zj(), 3),
            &EntryFacts::Repair {
                facts: facts(zj(), 9, Category::CreditRepair, &company()),
                target: Some(repaired_now)
            },
            today
        )
        .is_some());
}

#[test]
fn expiry_applies_to_what_was_sent_and_still_ends_that_day() {
    let plan = Plan::new(
        Filter::default(),
        Scope {
            grants: vec![grant(None, None, false)],
        },
    )
    .expect("plan");
    let end = date!(2027 - 01 - 31);
    let penalty = facts(zj(), 1, Category::AdministrativePenalty, &company());
    let mut cursor = Cursor::start(date!(2027 - 01 - 01));
    assert_eq!(plan.expiry(end, &penalty, 5, &cursor), None, "not sent yet");
    cursor.advance(zj(), 5);
    let e = plan.expiry(end, &penalty, 5, &cursor).expect("withdrawn");
    assert_eq!(
        (e.change, e.entry),
        (Change::Withdrawn(Withdrawal::PublicityEnded), None)
    );
    assert_eq!(
        plan.expiry(date!(2027 - 01 - 30), &penalty, 5, &cursor),
        None,
        "moved by an amendment"
    );
    let repaired = Facts {
        repaired: true,
        ..penalty
    };
    assert_eq!(
        plan.expiry(end, &repaired, 5, &cursor),
        None,
        "withdrawn by its repair already"
    );
}

#[test]
fn cursors_round_trip_and_refuse_garbage() {
    let mut c = Cursor::start(date!(2026 - 12 - 01));
    c.advance(zj(), 41);
    c.advance(js(), 7);
    c.expired_within = Some((zj(), RecordId([7; 16])));
    assert_eq!(Cursor::decode(&c.encode()), Ok(c.clone()));
    assert_eq!(c.next_seq(zj()), 42);
    let bytes = c.encode();
    for cut in 0..bytes.len() {
        assert!(
            Cursor::decode(&bytes[..cut]).is_err(),
            "a cut cursor at {cut} is refused"
        );
    }
    let mut extra = bytes.clone();
    extra.push(0);
    assert!(Cursor::decode(&extra).is_err());
    let mut zero = Cursor::start(date!(2026 - 12 - 01)).encode();
    *zero.last_mut().expect("count") = 1;
    zero.extend_from_slice(&zj().code().to_be_bytes());
    zero.extend_from_slice(&0u64.to_be_bytes());
    assert!(Cursor::decode(&zero).is_err(), "seq 0 is not a position");
}

#[test]
fn a_plan_digest_depends_on_content_not_order() {
    let a = Scope {
        grants: vec![
            grant(Some(&[Category::AdministrativePenalty]), None, false),
            grant(None, Some(&[js()]), true),
        ],
    };
    let b = Scope {
        grants: a.grants.iter().rev().cloned().collect(),
    };
    let d = |s: Scope, public_only| {
        Plan::new(
            Filter {
                public_only,
                ..Filter::default()
            },
            s,
        )
        .expect("plan")
        .digest()
    };
    assert_eq!(d(a.clone(), false), d(b, false));
    assert_ne!(d(a.clone(), false), d(a, true));
}

#[test]
fn profiles_are_in_a_fixed_order_and_within_scope() {
    let scope = Scope {
        grants: vec![grant(None, Some(&[zj()]), false)],
    };
    let row = |origin, n| ProfileRow {
        record: facts(origin, n, Category::AdministrativePenalty, &company()),
        status: Status::InPublicity,
        latest_seq: u64::from(n),
        latest_kind: crate::log::ledger::OpKind::Publish,
        record_json: vec![n],
    };
    let rows = profile(
        [row(zj(), 3), row(js(), 1), row(zj(), 1)],
        &scope,
        &company().index_bytes(),
    );
    let ids: Vec<u8> = rows.iter().map(|r| r.record.record_id.0[0]).collect();
    assert_eq!(
        ids,
        vec![1, 3],
        "320000 is outside the scope; the rest in record-id order"
    );
}

#[test]
fn a_repair_of_a_visible_record_does_not_carry_a_repair_record_the_scope_hides() {
    let today = date!(2026 - 06 - 01);
    let plan = Plan::new(
        Filter::default(),
        Scope {
            grants: vec![grant(Some(&[Category::AdministrativePenalty]), None, false)],
        },
    )
    .expect("plan");
    let target = Facts {
        repaired: true,
        ..facts(zj(), 1, Category::AdministrativePenalty, &company())
    };
    let mut repair = facts(zj(), 9, Category::CreditRepair, &company());
    let e = plan
        .classify(
            (zj(), 3),
            &EntryFacts::Repair {
                facts: repair.clone(),
                target: Some(target.clone()),
            },
            today,
        )
        .expect("the withdrawal of the penalty");
    assert!(
        !e.entry_visible,
        "credit_repair is not granted: its record does not go out"
    );
    repair.disclosure = DisclosureClass::NonPublic;
    let all = Plan::new(
        Filter::default(),
        Scope {
            grants: vec![grant(None, None, false)],
        },
    )
    .expect("plan");
    let e = all
        .classify(
            (zj(), 3),
            &EntryFacts::Repair {
                facts: repair,
                target: Some(target.clone()),
            },
            today,
        )
        .expect("withdrawal");
    assert!(
        !e.entry_visible,
        "a non-public repair record stays hidden from a public-only grant"
    );
    let public_repair = facts(zj(), 9, Category::CreditRepair, &company());
    let e = all
        .classify(
            (zj(), 3),
            &EntryFacts::Repair {
                facts: public_repair,
                target: Some(target),
            },
            today,
        )
        .expect("withdrawal");
    assert!(e.entry_visible);
}
