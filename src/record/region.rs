//! Province-level regions (GB/T 2260): a `Region` always holds one of the 31 participating
//! province codes, so every accessor is total.

use std::fmt;

/// The 31 participants in code order, as listed in `record-schema.json` ("provinces").
/// Hong Kong, Macao and Taiwan (810000, 820000, 710000) are deliberately absent: they are not
/// exchange participants (STANDARDS §3).
const PROVINCES: [(u32, &str, &str); 31] = [
    (110000, "北京市", "Beijing"),
    (120000, "天津市", "Tianjin"),
    (130000, "河北省", "Hebei"),
    (140000, "山西省", "Shanxi"),
    (150000, "内蒙古自治区", "Inner Mongolia"),
    (210000, "辽宁省", "Liaoning"),
    (220000, "吉林省", "Jilin"),
    (230000, "黑龙江省", "Heilongjiang"),
    (310000, "上海市", "Shanghai"),
    (320000, "江苏省", "Jiangsu"),
    (330000, "浙江省", "Zhejiang"),
    (340000, "安徽省", "Anhui"),
    (350000, "福建省", "Fujian"),
    (360000, "江西省", "Jiangxi"),
    (370000, "山东省", "Shandong"),
    (410000, "河南省", "Henan"),
    (420000, "湖北省", "Hubei"),
    (430000, "湖南省", "Hunan"),
    (440000, "广东省", "Guangdong"),
    (450000, "广西壮族自治区", "Guangxi"),
    (460000, "海南省", "Hainan"),
    (500000, "重庆市", "Chongqing"),
    (510000, "四川省", "Sichuan"),
    (520000, "贵州省", "Guizhou"),
    (530000, "云南省", "Yunnan"),
    (540000, "西藏自治区", "Xizang (Tibet)"),
    (610000, "陕西省", "Shaanxi"),
    (620000, "甘肃省", "Gansu"),
    (630000, "青海省", "Qinghai"),
    (640000, "宁夏回族自治区", "Ningxia"),
    (650000, "新疆维吾尔自治区", "Xinjiang"),
];

static ALL: [Region; 31] = {
    let mut all = [Region(0); 31];
    let mut i = 0;
    while i < all.len() {
        all[i] = Region(PROVINCES[i].0);
        i += 1;
    }
    all
};

/// A GB/T 2260 province-level code such as 330000 (Zhejiang).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Region(u32);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a province-level region code: {value:?}")]
pub struct RegionError {
    pub value: String,
}

/// The national hub's code (GB/T 2260's code of the whole country): a node with an origin log of
/// its own (checkpoints, receipts of national departments) that relays every province's. It is
/// not a province: never a record's region, a USCC's or an ID's (`parse` refuses it).
pub const NATIONAL_HUB_CODE: u32 = 100000;
const NATIONAL_HUB: (u32, &str, &str) = (NATIONAL_HUB_CODE, "全国", "National hub");

impl Region {
    /// The national hub, as a node and an origin.
    pub const NATIONAL_HUB: Region = Region(NATIONAL_HUB_CODE);

    /// Accepts exactly six ASCII digits naming one of the 31 provinces; no trimming, no sign.
    /// For record fields: the national hub's code is not accepted.
    pub fn parse(s: &str) -> Result<Region, RegionError> {
        let bad = || RegionError { value: s.to_owned() };
        if s.len() != 6 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let code: u32 = s.parse().map_err(|_| bad())?;
        match PROVINCES.binary_search_by_key(&code, |p| p.0) {
            Ok(_) => Ok(Region(code)),
            Err(_) => Err(bad()),
        }
    }

    /// Like `parse`, and also the national hub (`100000`): the region of a node, or of an
    /// identity, a peer or an origin.
    pub fn parse_node(s: &str) -> Result<Region, RegionError> {
        if s == "100000" {
            return Ok(Region::NATIONAL_HUB);
        }
        Region::parse(s)
    }

    /// Whether `code` is a participating province's code (not the national hub), without
    /// building text: the hot path of `check_uscc`.
    pub fn is_province_code(code: u32) -> bool {
        PROVINCES.binary_search_by_key(&code, |p| p.0).is_ok()
    }

    /// A province's or the national hub's code, as carried on the wire (origins, nodes).
    pub fn from_code(code: u32) -> Result<Region, RegionError> {
        if code == NATIONAL_HUB_CODE {
            return Ok(Region::NATIONAL_HUB);
        }
        match PROVINCES.binary_search_by_key(&code, |p| p.0) {
            Ok(_) => Ok(Region(code)),
            Err(_) => Err(RegionError {
                value: code.to_string(),
            }),
        }
    }

    /// A region code as shown to operators: the region when it is one, else the number as given
    /// (a code on the wire this node does not know).
    pub fn code_text(code: u32) -> String {
        Region::from_code(code)
            .map(|r| r.to_string())
            .unwrap_or_else(|_| code.to_string())
    }

    /// Whether this is the national hub rather than a province.
    pub fn is_national_hub(self) -> bool {
        self.0 == NATIONAL_HUB_CODE
    }

    pub fn code(self) -> u32 {
        self.0
    }

    pub fn name_en(self) -> &'static str {
        self.entry().2
    }

    pub fn name_zh(self) -> &'static str {
        self.entry().1
    }

    /// The 31 provinces in code order.
    pub fn all() -> &'static [Region] {
        &ALL
    }

    /// Position in `all()`, handy for per-province tables elsewhere. Provinces only: the
    /// national hub has none (it panics; ask `is_national_hub` first).
    pub fn index(self) -> usize {
        PROVINCES
            .binary_search_by_key(&self.0, |p| p.0)
            .expect("a province: the national hub is in no per-province table")
    }

    fn entry(self) -> &'static (u32, &'static str, &'static str) {
        if self.is_national_hub() {
            return &NATIONAL_HUB;
        }
        &PROVINCES[self.index()]
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:06}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_schema() {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("record-schema.json")).expect("schema parses");
        let provinces = schema["provinces"].as_object().expect("provinces object");
        assert_eq!(provinces.len(), Region::all().len());
        for region in Region::all() {
            let entry = &provinces[&region.to_string()];
            assert_eq!(entry["zh"], region.name_zh());
            assert_eq!(entry["en"], region.name_en());
        }
        assert!(Region::all().windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn parse_accepts_only_six_digit_province_codes() {
        let zj = Region::parse("330000").expect("zhejiang");
        assert_eq!(
            (zj.code(), zj.name_zh(), zj.to_string()),
            (330000, "浙江省", "330000".into())
        );
        assert_eq!(Region::all()[zj.index()], zj);
        for bad in [
            "",
            "33000",
            "3300000",
            "330100",
            "810000",
            "710000",
            "+33000",
            " 330000",
            "３３００００",
        ] {
            let err = Region::parse(bad).expect_err(bad);
            assert_eq!(err.value, bad);
            assert!(err.to_string().starts_with("not a province-level region code"));
        }
        assert!(Region::from_code(999999).is_err());
        // The national hub is a node and an origin, never a record's region.
        assert!(Region::parse("100000").is_err());
        let hub = Region::parse_node("100000").expect("the hub is a node region");
        assert!(hub.is_national_hub() && Region::from_code(100000) == Ok(hub));
        assert_eq!(hub.name_en(), "National hub");
        assert_eq!(Region::parse_node("330000"), Region::parse("330000"));
        assert!(Region::parse_node("100001").is_err());
        assert_eq!(Region::from_code(650000).map(Region::name_en), Ok("Xinjiang"));
    }
}
