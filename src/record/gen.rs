//! A deterministic generator of realistic records for demos, tests and benchmarks. The same seed
//! and origin always give the same lines. Every `next_line` passes `parse_operation`; its rings
//! of earlier records are bounded, so memory stays flat however many lines are drawn.

use std::collections::VecDeque;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use time::macros::date;
use time::{Date, Duration, Month, Weekday};

use super::{resident_id_check_char, uscc_check_char, Category, RecordId, Region, RejectReason, RECORD_BYTES_MAX};

/// Penalties a later repair may refer to; older ones are forgotten.
const RECENT_PENALTIES_MAX: usize = 512;
/// Records a later amendment may correct.
const RECENT_RECORDS_MAX: usize = 128;
/// Decision dates are drawn from two years starting here, all under the 2025 rule set.
const FIRST_DECISION: Date = date!(2024 - 07 - 01);
const DECISION_SPAN_DAYS: i64 = 730;
const LONG_TERM: Date = date!(2099 - 12 - 31);
/// STANDARDS §5.4: the repair must be synchronised within 3 working days of the decision.
const REPAIR_SYNC_WORKING_DAYS: u32 = 3;

/// Capital city and one-character abbreviation per province, in `Region::all()` order.
const PROVINCE_STYLE: [(&str, &str); 31] = [
    ("北京市", "京"),
    ("天津市", "津"),
    ("石家庄市", "冀"),
    ("太原市", "晋"),
    ("呼和浩特市", "蒙"),
    ("沈阳市", "辽"),
    ("长春市", "吉"),
    ("哈尔滨市", "黑"),
    ("上海市", "沪"),
    ("南京市", "苏"),
    ("杭州市", "浙"),
    ("合肥市", "皖"),
    ("福州市", "闽"),
    ("南昌市", "赣"),
    ("济南市", "鲁"),
    ("郑州市", "豫"),
    ("武汉市", "鄂"),
    ("长沙市", "湘"),
    ("广州市", "粤"),
    ("南宁市", "桂"),
    ("海口市", "琼"),
    ("重庆市", "渝"),
    ("成都市", "川"),
    ("贵阳市", "黔"),
    ("昆明市", "滇"),
    ("拉萨市", "藏"),
    ("西安市", "陕"),
    ("兰州市", "甘"),
    ("西宁市", "青"),
    ("银川市", "宁"),
    ("乌鲁木齐市", "新"),
];

/// Departments of a city government: (name, abbreviation used in document numbers).
const DEPARTMENTS: [(&str, &str); 9] = [
    ("市场监督管理局", "市监"),
    ("卫生健康委员会", "卫"),
    ("生态环境局", "环"),
    ("交通运输局", "交"),
    ("住房和城乡建设局", "建"),
    ("应急管理局", "应急"),
    ("城市管理局", "城管"),
    ("税务局", "税"),
    ("发展和改革委员会", "发改"),
];
const MARKET: usize = 0;
const TAX: usize = 7;
const DEVELOPMENT: usize = 8;

/// (department, certificate, licensed content)
const LICENCES: [(usize, &str, &str); 5] = [
    (
        0,
        "食品经营许可证",
        "预包装食品（含冷藏冷冻食品）销售；散装食品销售；热食类食品制售",
    ),
    (1, "公共场所卫生许可证", "住宿场所、沐浴场所卫生许可"),
    (
        2,
        "排污许可证",
        "排放污染物种类：废水、废气，按许可证副本载明的标准执行",
    ),
    (3, "道路运输经营许可证", "道路普通货物运输；货物专用运输（集装箱）"),
    (
        4,
        "建筑业企业资质证书",
        "建筑工程施工总承包叁级；市政公用工程施工总承包叁级",
    ),
];
const LICENCE_KINDS: [&str; 6] = ["普通", "登记", "核准", "认可", "特许", "其他"];

/// (department, violation type, facts, legal basis)
const VIOLATIONS: [(usize, &str, &str, &str); 6] = [
    (
        0,
        "销售不符合食品安全标准的食品",
        "经抽样检验，当事人销售的食品菌落总数项目不符合食品安全标准。",
        "《中华人民共和国食品安全法》第一百二十四条第一款",
    ),
    (
        2,
        "超标排放大气污染物",
        "经监测，当事人废气排放口颗粒物浓度超过排放标准。",
        "《中华人民共和国大气污染防治法》第九十九条",
    ),
    (
        5,
        "未按规定对从业人员进行安全生产教育和培训",
        "经现场检查，当事人未如实记录安全生产教育和培训情况。",
        "《中华人民共和国安全生产法》第九十七条",
    ),
    (
        3,
        "未随车携带道路运输证",
        "经路面检查，当事人车辆未随车携带道路运输证。",
        "《中华人民共和国道路运输条例》第六十八条",
    ),
    (
        6,
        "擅自占用城市道路从事经营活动",
        "当事人未经批准在城市道路上设摊经营。",
        "《城市市容和环境卫生管理条例》第三十六条",
    ),
    (
        7,
        "未按照规定期限办理纳税申报",
        "当事人未按期办理增值税纳税申报，经责令限期改正逾期仍未改正。",
        "《中华人民共和国税收征收管理法》第六十二条",
    ),
];

const SURNAMES: [&str; 20] = [
    "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙", "马", "朱", "胡", "郭", "何", "林", "罗",
    "高",
];
const GIVEN_NAMES: [&str; 20] = [
    "伟", "芳", "娜", "秀英", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明", "超",
    "建华", "晓东",
];
const TRADE_NAMES: [&str; 15] = [
    "华信", "恒通", "鑫达", "宏远", "天成", "金源", "瑞丰", "博雅", "中和", "永安", "新联", "嘉禾", "立信", "盛世",
    "汇达",
];
const INDUSTRIES: [&str; 12] = [
    "科技",
    "贸易",
    "建筑工程",
    "餐饮管理",
    "食品",
    "物流",
    "医药",
    "环保科技",
    "电子商务",
    "机械制造",
    "文化传媒",
    "新材料",
];
const SHOPS: [&str; 7] = ["便利店", "小吃店", "五金店", "理发店", "水果店", "服装店", "餐馆"];
const COMMITMENT_TYPES: [&str; 6] = [
    "审批替代型",
    "容缺受理型",
    "行业自律型",
    "主动型",
    "信用修复型",
    "证明事项告知承诺",
];
const AWARDS: [(usize, &str, &str); 3] = [
    (TAX, "纳税信用A级纳税人", "《纳税信用管理办法》第二十条"),
    (MARKET, "守合同重信用企业", "《守合同重信用企业公示管理办法》第八条"),
    (
        DEVELOPMENT,
        "诚信示范企业",
        "《关于建立完善守信联合激励和失信联合惩戒制度的指导意见》",
    ),
];

type Object = Map<String, Value>;

/// A deterministic source of valid (and, on request, invalid) record lines.
pub struct RecordGenerator {
    rng: StdRng,
    origin: Region,
    documents: u64,
    penalties: VecDeque<Object>,
    recent: VecDeque<Object>,
}

impl RecordGenerator {
    pub fn new(seed: u64, origin: Region) -> Self {
        RecordGenerator {
            rng: StdRng::seed_from_u64(seed),
            origin,
            documents: 0,
            penalties: VecDeque::with_capacity(RECENT_PENALTIES_MAX),
            recent: VecDeque::with_capacity(RECENT_RECORDS_MAX),
        }
    }

    /// One valid record as a single JSON line without a trailing newline. About 1% are
    /// amendments of an earlier record and 3% repairs of an earlier penalty.
    pub fn next_line(&mut self) -> String {
        let roll = self.rng.random_range(0..1000);
        let record = if roll < 10 && !self.recent.is_empty() {
            self.amendment()
        } else if roll < 40 && !self.penalties.is_empty() {
            self.repair()
        } else {
            let category = match self.rng.random_range(0..100) {
                0..=44 => Category::AdministrativeLicence,
                45..=82 => Category::AdministrativePenalty,
                83..=86 => Category::DishonestList,
                87..=92 => Category::RedList,
                _ => Category::CreditCommitment,
            };
            let record = self.build(category);
            if category == Category::AdministrativePenalty {
                push_bounded(&mut self.penalties, record.clone(), RECENT_PENALTIES_MAX);
            }
            record
        };
        push_bounded(&mut self.recent, record.clone(), RECENT_RECORDS_MAX);
        Value::Object(record).to_string()
    }

    /// A line that `parse_operation` rejects with exactly `reason`: a fresh valid record with
    /// one defect. It is not remembered for later amendments or repairs.
    pub fn invalid_line(&mut self, reason: RejectReason) -> String {
        let category = if reason == RejectReason::NegativeAmount {
            Category::AdministrativePenalty
        } else {
            Category::AdministrativeLicence
        };
        let mut r = self.build(category);
        let uscc = r["data_source_unit_uscc"].as_str().unwrap_or_default().to_owned();
        let id = self.resident_id(self.origin);
        let decision = r
            .get("decision_date")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let mut set = |field: &str, value: Value| r.insert(field.to_owned(), value);
        match reason {
            RejectReason::UsccBadCheckDigit => {
                let wrong = if uscc.ends_with('0') { '1' } else { '0' };
                set("data_source_unit_uscc", json!(format!("{}{wrong}", &uscc[..17])))
            }
            RejectReason::UsccWrongLength => set("data_source_unit_uscc", json!(&uscc[..17])),
            RejectReason::UsccUnknownProvince => set(
                "data_source_unit_uscc",
                json!(with_check(&format!("{}99{}", &uscc[..2], &uscc[4..17]))),
            ),
            RejectReason::UsccInvalidCharset => set(
                "data_source_unit_uscc",
                json!(format!("{}I{}", &uscc[..9], &uscc[10..])),
            ),
            RejectReason::IdBadCheckDigit => {
                let wrong = if id.ends_with('0') { '1' } else { '0' };
                set("legal_rep_id_number", json!(format!("{}{wrong}", &id[..17])))
            }
            RejectReason::IdInvalidFormat => set("legal_rep_id_number", json!(&id[..17])),
            RejectReason::DateOrder => {
                let decision = super::validate::parse_iso_date(&decision).unwrap_or(FIRST_DECISION);
                set("valid_to", json!((decision - Duration::days(1)).to_string()))
            }
            RejectReason::InvalidDateFormat => set("decision_date", json!(decision.replace('-', "/"))),
            RejectReason::MissingRequiredField => r.remove("subject_name"),
            RejectReason::OversizedText => set("subject_name", json!("测".repeat(201))),
            RejectReason::ControlCharacters => set("subject_name", json!("某某公司\u{7}")),
            RejectReason::NegativeAmount => set("fine_amount_wan", json!(-0.5)),
            RejectReason::UnknownCategory => set("category", json!("tax_payment")),
            RejectReason::InvalidValue => set("sharing_class", json!("sometimes")),
            RejectReason::InvalidJson => {
                let mut line = Value::Object(r).to_string();
                line.pop();
                return line;
            }
            RejectReason::ForbiddenField => set("blood_type", json!("A")),
            RejectReason::UnsupportedSchemaVersion => set("schema_version", json!("2.0")),
            RejectReason::OversizedRecord => set("attachment", json!("a".repeat(RECORD_BYTES_MAX))),
        };
        Value::Object(r).to_string()
    }

    fn build(&mut self, category: Category) -> Object {
        let mut r = self.envelope(category);
        let decision = FIRST_DECISION + Duration::days(self.rng.random_range(0..DECISION_SPAN_DAYS));
        let fields = match category {
            Category::AdministrativeLicence => self.licence(decision),
            Category::AdministrativePenalty => self.penalty(decision),
            Category::DishonestList => self.dishonest(decision),
            Category::RedList => self.red(decision),
            Category::CreditCommitment => self.commitment(decision),
            Category::CreditRepair => unreachable!("repairs are built from an earlier penalty"),
        };
        r.extend(fields);
        self.set_updated_at(&mut r, decision);
        r
    }

    /// Fields shared by every category; subject fields for a fresh subject.
    fn envelope(&mut self, category: Category) -> Object {
        let subject_region = if self.rng.random_bool(0.1) {
            *self.pick(Region::all())
        } else {
            self.origin
        };
        let (unit, unit_uscc) = self.authority(DEVELOPMENT);
        let mut r = Object::new();
        r.insert("record_id".into(), json!(self.record_id().to_string()));
        r.insert("schema_version".into(), json!("1.0"));
        r.insert("category".into(), json!(category.code()));
        r.insert("source_region_code".into(), json!(self.origin.to_string()));
        r.insert("subject_region_code".into(), json!(subject_region.to_string()));
        r.insert("data_source_unit".into(), json!(unit));
        r.insert("data_source_unit_uscc".into(), json!(unit_uscc));
        r.insert("record_version".into(), json!(1));
        let city = PROVINCE_STYLE[subject_region.index()].0;
        let natural = match self.rng.random_range(0..100) {
            0..=74 => {
                let name = format!("{city}{}{}有限公司", self.pick(&TRADE_NAMES), self.pick(&INDUSTRIES));
                self.insert_business(&mut r, "legal_entity", name, "91", subject_region);
                false
            }
            75..=86 => {
                let name = format!("{city}{}{}", self.person_name(), self.pick(&SHOPS));
                self.insert_business(&mut r, "individual_business", name, "92", subject_region);
                false
            }
            _ => {
                r.insert("subject_type".into(), json!("natural_person"));
                r.insert("subject_name".into(), json!(self.person_name()));
                r.insert("subject_id_type".into(), json!("居民身份证"));
                r.insert("subject_id_number".into(), json!(self.resident_id(subject_region)));
                true
            }
        };
        // STANDARDS §2.2 and §6.2: natural persons are shared conditionally and disclosed only
        // to limited parties.
        let (sharing, disclosure) = if natural {
            ("conditional", "limited")
        } else {
            ("unconditional", "public")
        };
        r.insert("sharing_class".into(), json!(sharing));
        r.insert("disclosure_class".into(), json!(disclosure));
        r
    }

    fn insert_business(&mut self, r: &mut Object, subject_type: &str, name: String, uscc_head: &str, region: Region) {
        r.insert("subject_type".into(), json!(subject_type));
        r.insert("subject_name".into(), json!(name));
        r.insert("subject_uscc".into(), json!(self.uscc(uscc_head, region)));
    }

    fn licence(&mut self, decision: Date) -> Object {
        let (department, cert, content) = *self.pick(&LICENCES);
        let (authority, authority_uscc) = self.authority(department);
        let valid_from = decision + Duration::days(self.rng.random_range(0..5));
        let valid_to = if self.rng.random_bool(0.2) {
            LONG_TERM
        } else {
            add_months(valid_from, 12 * self.rng.random_range(1..=5)) - Duration::days(1)
        };
        let object = json!({
            "licence_decision_doc_no": self.document_no(department, "许", decision),
            "licence_category": self.pick(&LICENCE_KINDS),
            "licence_cert_name": cert,
            "licence_content": content,
            "decision_date": decision.to_string(),
            "valid_from": valid_from.to_string(),
            "valid_to": valid_to.to_string(),
            "licensing_authority": authority,
            "licensing_authority_uscc": authority_uscc,
            "status": "1",
        });
        into_object(object)
    }

    fn penalty(&mut self, decision: Date) -> Object {
        let (department, violation, facts, basis) = *self.pick(&VIOLATIONS);
        let (authority, authority_uscc) = self.authority(department);
        // 2025 rule set (STANDARDS §5.1): minor is not published; general 3/12 months;
        // serious 12/36 months, counted from the decision date.
        let (severity, periods, yuan_range, categories): (&str, Option<(u32, u32)>, _, &[&str]) =
            match self.rng.random_range(0..100) {
                0..=39 => ("minor", None, 1..=20, &["警告", "罚款"]),
                40..=84 => ("general", Some((3, 12)), 20..=200, &["罚款"]),
                _ => ("serious", Some((12, 36)), 200..=2000, &["罚款", "没收违法所得"]),
            };
        let fine_yuan = self.rng.random_range(yuan_range) * 100;
        let mut object = into_object(json!({
            "penalty_decision_doc_no": self.document_no(department, "罚", decision),
            "violation_type": violation,
            "violation_facts": facts,
            "penalty_basis": basis,
            "penalty_categories": categories,
            "penalty_content": format!("{}罚款人民币{fine_yuan}元", if categories.len() > 1 && severity == "minor" { "警告，" } else { "" }),
            "fine_amount_wan": f64::from(fine_yuan) / 10_000.0,
            "decision_date": decision.to_string(),
            "severity": severity,
            "penalising_authority": authority,
            "penalising_authority_uscc": authority_uscc,
        }));
        match periods {
            Some((min_months, max_months)) => {
                object.insert(
                    "earliest_repair_date".into(),
                    json!(add_months(decision, min_months).to_string()),
                );
                object.insert(
                    "publicity_end_date".into(),
                    json!(add_months(decision, max_months).to_string()),
                );
            }
            None => {
                object.insert("publicity_end_date".into(), Value::Null);
                object.insert("disclosure_class".into(), json!("non_public"));
            }
        }
        object
    }

    fn dishonest(&mut self, listed: Date) -> Object {
        let (authority, authority_uscc) = self.authority(MARKET);
        into_object(json!({
            "list_name": "严重违法失信名单",
            "listing_reason": "提供虚假材料骗取市场主体登记，被撤销登记",
            "listing_basis": "《市场监督管理严重违法失信名单管理办法》第九条",
            "listing_authority": authority,
            "listing_authority_uscc": authority_uscc,
            "listing_decision_doc_no": self.document_no(MARKET, "列严", listed),
            "listing_date": listed.to_string(),
            "earliest_repair_date": add_months(listed, 12).to_string(),
            "publicity_end_date": add_months(listed, 36).to_string(),
            "status": "listed",
        }))
    }

    fn red(&mut self, awarded: Date) -> Object {
        let (department, award, basis) = *self.pick(&AWARDS);
        let (authority, authority_uscc) = self.authority(department);
        let valid_to = add_months(awarded, 12 * self.rng.random_range(1..=3)) - Duration::days(1);
        into_object(json!({
            "award_name": award,
            "award_basis": basis,
            "awarding_authority": authority,
            "awarding_authority_uscc": authority_uscc,
            "award_doc_no": self.document_no(department, "信", awarded),
            "award_date": awarded.to_string(),
            "valid_from": awarded.to_string(),
            "valid_to": valid_to.to_string(),
            "status": "valid",
        }))
    }

    fn commitment(&mut self, committed: Date) -> Object {
        let (unit, unit_uscc) = self.authority(MARKET);
        let status = match self.rng.random_range(0..100) {
            0..=59 => "fulfilled",
            60..=94 => "pending",
            _ => "breached",
        };
        into_object(json!({
            "commitment_type": self.pick(&COMMITMENT_TYPES),
            "commitment_matter": "申请食品经营许可（告知承诺制）",
            "commitment_content": "本单位承诺所提供材料真实有效，如有虚假愿承担法律责任并接受失信惩戒。",
            "commitment_date": committed.to_string(),
            "acceptance_unit": unit,
            "acceptance_unit_uscc": unit_uscc,
            "valid_from": committed.to_string(),
            "valid_to": (add_months(committed, 12) - Duration::days(1)).to_string(),
            "fulfilment_status": status,
        }))
    }

    /// Repairs one earlier penalty (removing it from the ring, so it is repaired once) by the
    /// authority that imposed it, for the same subject.
    fn repair(&mut self) -> Object {
        let index = self.rng.random_range(0..self.penalties.len());
        let Some(penalty) = self.penalties.remove(index) else {
            unreachable!("index drawn below len")
        };
        let text = |field: &str| penalty.get(field).and_then(Value::as_str).unwrap_or_default();
        let date_of = |field: &str| super::validate::parse_iso_date(text(field));
        let decision = date_of("decision_date").unwrap_or(FIRST_DECISION);
        // Minor penalties may be repaired as soon as the obligations are met.
        let eligible = date_of("earliest_repair_date").unwrap_or(decision + Duration::days(7));
        let applied = eligible + Duration::days(self.rng.random_range(0..60));
        let repaired = applied + Duration::days(self.rng.random_range(3..15));
        let mut r = self.envelope(Category::CreditRepair);
        for field in [
            "subject_type",
            "subject_name",
            "subject_uscc",
            "subject_id_type",
            "subject_id_number",
            "subject_region_code",
            "sharing_class",
            "disclosure_class",
        ] {
            match penalty.get(field) {
                Some(value) => r.insert(field.to_owned(), value.clone()),
                None => r.remove(field),
            };
        }
        let document_no = self.document_no(MARKET, "修", repaired);
        r.extend(into_object(json!({
            "repaired_record_id": text("record_id"),
            "repaired_category": "administrative_penalty",
            "repair_method": "terminate_publicity",
            "application_date": applied.to_string(),
            "repair_decision_date": repaired.to_string(),
            "repair_decision_doc_no": document_no,
            "repair_authority": text("penalising_authority"),
            "repair_authority_uscc": text("penalising_authority_uscc"),
            "record_retained": true,
            "sync_deadline_date": add_working_days(repaired, REPAIR_SYNC_WORKING_DAYS).to_string(),
            "sync_targets": ["信用中国", "国家企业信用信息公示系统"],
        })));
        self.set_updated_at(&mut r, repaired);
        r
    }

    /// A correction of an earlier record: same id, next version, a later `updated_at`.
    fn amendment(&mut self) -> Object {
        let index = self.rng.random_range(0..self.recent.len());
        let Some(mut r) = self.recent.remove(index) else {
            unreachable!("index drawn below len")
        };
        let version = r.get("record_version").and_then(Value::as_u64).unwrap_or(1) + 1;
        r.insert("record_version".into(), json!(version));
        r.insert(
            "remarks".into(),
            json!(format!("第{}次更正：补正主体名称及文书信息", version - 1)),
        );
        let earlier = r
            .get("updated_at")
            .and_then(Value::as_str)
            .and_then(|s| s.get(..10))
            .and_then(super::validate::parse_iso_date);
        self.set_updated_at(&mut r, earlier.unwrap_or(FIRST_DECISION) + Duration::days(30));
        r
    }

    /// 双公示: published within 7 working days of the decision, in China Standard Time.
    fn set_updated_at(&mut self, r: &mut Object, decision: Date) {
        let day = add_working_days(decision, self.rng.random_range(1..=7));
        let (h, m, s) = (
            self.rng.random_range(8..19),
            self.rng.random_range(0..60),
            self.rng.random_range(0..60),
        );
        r.insert("updated_at".into(), json!(format!("{day}T{h:02}:{m:02}:{s:02}+08:00")));
    }

    fn record_id(&mut self) -> RecordId {
        let mut bytes = [0u8; 16];
        self.rng.fill(&mut bytes);
        RecordId(uuid::Builder::from_random_bytes(bytes).into_uuid().into_bytes())
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.rng.random_range(0..items.len())]
    }

    fn person_name(&mut self) -> String {
        format!("{}{}", self.pick(&SURNAMES), self.pick(&GIVEN_NAMES))
    }

    /// A county-level division inside `region`: the code only has to look real, since a USCC
    /// or ID keeps its historical division and validation checks the province alone.
    fn division(&mut self, region: Region) -> u32 {
        region.code() + self.rng.random_range(1..=9) * 100 + self.rng.random_range(1..=12)
    }

    /// A USCC registered in `region`, with a correct embedded GB 11714 check and mod-31 check.
    fn uscc(&mut self, head: &str, region: Region) -> String {
        let charset = super::uscc::USCC_CHARSET.as_bytes();
        // Codes issued since 2015 by market regulation mostly carry an "MA" organisation code.
        let mut body: String = if self.rng.random_bool(0.6) {
            "MA".into()
        } else {
            String::new()
        };
        while body.len() < 8 {
            body.push(char::from(*self.pick(charset)));
        }
        let division = self.division(region);
        with_check(&format!("{head}{division}{body}{}", organisation_check(&body)))
    }

    /// A city department of the origin province, with a stable code derived from its identity.
    fn authority(&mut self, department: usize) -> (String, String) {
        let city = PROVINCE_STYLE[self.origin.index()].0;
        let body = format!(
            "{:08}",
            self.origin.code() / 10_000 * 1_000_000 + department as u32 * 1000 + 1
        );
        let division = self.origin.code() + 100;
        let uscc = with_check(&format!("11{division}{body}{}", organisation_check(&body)));
        (format!("{city}{}", DEPARTMENTS[department].0), uscc)
    }

    fn document_no(&mut self, department: usize, kind: &str, decided: Date) -> String {
        self.documents += 1;
        let (city, province) = PROVINCE_STYLE[self.origin.index()];
        let city_initial = city.chars().next().unwrap_or_default();
        format!(
            "{province}{city_initial}{}{kind}〔{}〕{}号",
            DEPARTMENTS[department].1,
            decided.year(),
            self.documents
        )
    }

    fn resident_id(&mut self, region: Region) -> String {
        let birth = date!(1960 - 01 - 01) + Duration::days(self.rng.random_range(0..16_000));
        let first17 = format!(
            "{}{:04}{:02}{:02}{:03}",
            self.division(region),
            birth.year(),
            u8::from(birth.month()),
            birth.day(),
            self.rng.random_range(1..1000)
        );
        let check = resident_id_check_char(&first17).expect("17 digits by construction");
        format!("{first17}{check}")
    }
}

fn push_bounded(ring: &mut VecDeque<Object>, item: Object, max: usize) {
    if ring.len() == max {
        ring.pop_front();
    }
    ring.push_back(item);
}

fn into_object(value: Value) -> Object {
    match value {
        Value::Object(map) => map,
        _ => unreachable!("json! object literal"),
    }
}

fn with_check(first17: &str) -> String {
    let check = uscc_check_char(first17).expect("generated from the uscc charset");
    format!("{first17}{check}")
}

/// GB 11714 check for an 8-symbol organisation-code body (full 26-letter alphabet values).
fn organisation_check(body: &str) -> char {
    const WEIGHTS: [u32; 8] = [3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = body
        .chars()
        .zip(WEIGHTS)
        .map(|(c, w)| c.to_digit(36).unwrap_or(0) * w)
        .sum();
    match 11 - sum % 11 {
        10 => 'X',
        11 => '0',
        d => char::from_digit(d, 10).unwrap_or('0'),
    }
}

/// Adds calendar months, clamping the day to the target month's length (31 Jan + 1 = 28/29 Feb).
pub fn add_months(d: Date, months: u32) -> Date {
    let total = d.year() * 12 + i32::from(u8::from(d.month())) - 1 + months as i32;
    let year = total.div_euclid(12);
    let month = Month::try_from((total.rem_euclid(12) + 1) as u8).expect("1..=12");
    Date::from_calendar_date(year, month, d.day().min(month.length(year))).expect("day clamped to month length")
}

/// Skips Saturdays and Sundays; public holidays are ignored, which only makes deadlines earlier.
fn add_working_days(mut d: Date, days: u32) -> Date {
    let mut left = days;
    while left > 0 {
        d += Duration::days(1);
        if !matches!(d.weekday(), Weekday::Saturday | Weekday::Sunday) {
            left -= 1;
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{parse_operation, Operation};
    use std::collections::{HashMap, HashSet};

    #[test]
    fn ten_thousand_lines_are_valid_and_realistic() {
        let origin = Region::parse("330000").expect("zhejiang");
        let mut generator = RecordGenerator::new(7, origin);
        let mut per_category: HashMap<Category, usize> = HashMap::new();
        let mut penalties = HashSet::new();
        let mut seen_ids = HashSet::new();
        let (mut amendments, mut repairs, mut foreign_subjects, mut natural, mut bytes) = (0, 0, 0, 0, 0);
        for _ in 0..10_000 {
            let line = generator.next_line();
            assert!(!line.contains('\n'));
            bytes += line.len();
            let record = match parse_operation(line.as_bytes()) {
                Ok(Operation::Upsert(record)) => record,
                other => panic!("{other:?} for {line}"),
            };
            assert_eq!(record.source_region, origin);
            *per_category.entry(record.category).or_default() += 1;
            if !seen_ids.insert(record.record_id) {
                assert!(record.record_version > 1, "a repeated id must be an amendment");
                amendments += 1;
            }
            match record.category {
                Category::AdministrativePenalty => {
                    penalties.insert(record.record_id);
                }
                Category::CreditRepair if record.record_version == 1 => {
                    let target = record.repaired_record_id.expect("repairs name their target");
                    assert!(penalties.contains(&target), "repairs refer to an earlier penalty");
                    repairs += 1;
                }
                _ => {}
            }
            foreign_subjects += usize::from(record.subject_region != Some(origin));
            natural += usize::from(matches!(record.subject, crate::record::SubjectKey::ResidentId(_)));
        }
        assert_eq!(per_category.len(), 6, "{per_category:?}");
        assert!(per_category[&Category::AdministrativeLicence] > 3_500);
        assert!(per_category[&Category::AdministrativePenalty] > 3_000);
        assert!((200..=400).contains(&repairs), "{repairs} repairs");
        assert!((50..=150).contains(&amendments), "{amendments} amendments");
        assert!(
            (700..=1_300).contains(&foreign_subjects),
            "{foreign_subjects} foreign subjects"
        );
        assert!(natural > 500, "{natural} natural persons");
        // The required envelope alone is ~700 bytes of keys and codes, so realistic lines average
        // ~1 KB rather than the 500-700 bytes first hoped for.
        assert!(
            (850..=1_100).contains(&(bytes / 10_000)),
            "mean {} bytes",
            bytes / 10_000
        );
    }

    #[test]
    fn same_seed_same_lines() {
        let origin = Region::all()[3];
        let mut a = RecordGenerator::new(42, origin);
        let mut b = RecordGenerator::new(42, origin);
        let mut c = RecordGenerator::new(43, origin);
        let lines: Vec<String> = (0..100).map(|_| a.next_line()).collect();
        assert_eq!(lines, (0..100).map(|_| b.next_line()).collect::<Vec<_>>());
        assert_ne!(lines, (0..100).map(|_| c.next_line()).collect::<Vec<_>>());
    }

    #[test]
    fn invalid_lines_fail_with_exactly_their_reason() {
        for region in [Region::all()[0], Region::all()[30]] {
            let mut generator = RecordGenerator::new(1, region);
            for reason in RejectReason::all() {
                for _ in 0..20 {
                    let line = generator.invalid_line(*reason);
                    let rejection = parse_operation(line.as_bytes()).expect_err(reason.code());
                    assert_eq!(rejection.reason, *reason, "{rejection} for {line:.300}");
                }
            }
        }
    }

    #[test]
    fn calendar_helpers() {
        assert_eq!(add_months(date!(2025 - 01 - 31), 1), date!(2025 - 02 - 28));
        assert_eq!(add_months(date!(2023 - 02 - 28), 12), date!(2024 - 02 - 28));
        assert_eq!(add_months(date!(2024 - 11 - 15), 3), date!(2025 - 02 - 15));
        assert_eq!(add_months(date!(2024 - 02 - 29), 36), date!(2027 - 02 - 28));
        // Friday + 3 working days = Wednesday.
        assert_eq!(add_working_days(date!(2025 - 06 - 27), 3), date!(2025 - 07 - 02));
        // The GB 11714 worked examples of STANDARDS §1.4.
        assert_eq!(organisation_check("60003734"), '1');
        assert_eq!(organisation_check("MA1K3BTP"), '2');
        assert_eq!(organisation_check("71526726"), 'X');
    }
}
