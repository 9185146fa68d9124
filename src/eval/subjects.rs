//! Subject display names and categories of MMLU, C-Eval and CMMLU, as the official
//! repositories publish them (hendrycks/test categories, hkust-nlp/ceval
//! `subject_mapping.json`, haonan-li/CMMLU `categories.py`).
use super::benchmarks::BenchmarkKind;

/// MMLU subjects by category (the four groups lm-evaluation-harness and the paper report).
const MMLU: &[(&str, &[&str])] = &[
    ("STEM", &[
        "abstract_algebra", "anatomy", "astronomy", "college_biology", "college_chemistry",
        "college_computer_science", "college_mathematics", "college_physics", "computer_security",
        "conceptual_physics", "electrical_engineering", "elementary_mathematics",
        "high_school_biology", "high_school_chemistry", "high_school_computer_science",
        "high_school_mathematics", "high_school_physics", "high_school_statistics", "machine_learning",
    ]),
    ("Humanities", &[
        "formal_logic", "high_school_european_history", "high_school_us_history",
        "high_school_world_history", "international_law", "jurisprudence", "logical_fallacies",
        "moral_disputes", "moral_scenarios", "philosophy", "prehistory", "professional_law",
        "world_religions",
    ]),
    ("Social Sciences", &[
        "econometrics", "high_school_geography", "high_school_government_and_politics",
        "high_school_macroeconomics", "high_school_microeconomics", "high_school_psychology",
        "human_sexuality", "professional_psychology", "public_relations", "security_studies",
        "sociology", "us_foreign_policy",
    ]),
    ("Other", &[
        "business_ethics", "clinical_knowledge", "college_medicine", "global_facts", "human_aging",
        "management", "marketing", "medical_genetics", "miscellaneous", "nutrition",
        "professional_accounting", "professional_medicine", "virology",
    ]),
];

/// C-Eval: (subject, Chinese name, category). `clinical_medicine` has no category in
/// `subject_mapping.json`; C-Eval's leaderboard counts it under Other.
const CEVAL: &[(&str, &str, &str)] = &[
    ("computer_network", "计算机网络", "STEM"),
    ("operating_system", "操作系统", "STEM"),
    ("computer_architecture", "计算机组成", "STEM"),
    ("college_programming", "大学编程", "STEM"),
    ("college_physics", "大学物理", "STEM"),
    ("college_chemistry", "大学化学", "STEM"),
    ("advanced_mathematics", "高等数学", "STEM"),
    ("probability_and_statistics", "概率统计", "STEM"),
    ("discrete_mathematics", "离散数学", "STEM"),
    ("electrical_engineer", "注册电气工程师", "STEM"),
    ("metrology_engineer", "注册计量师", "STEM"),
    ("high_school_mathematics", "高中数学", "STEM"),
    ("high_school_physics", "高中物理", "STEM"),
    ("high_school_chemistry", "高中化学", "STEM"),
    ("high_school_biology", "高中生物", "STEM"),
    ("middle_school_mathematics", "初中数学", "STEM"),
    ("middle_school_biology", "初中生物", "STEM"),
    ("middle_school_physics", "初中物理", "STEM"),
    ("middle_school_chemistry", "初中化学", "STEM"),
    ("veterinary_medicine", "兽医学", "STEM"),
    ("college_economics", "大学经济学", "Social Science"),
    ("business_administration", "工商管理", "Social Science"),
    ("marxism", "马克思主义基本原理", "Social Science"),
    ("mao_zedong_thought", "毛泽东思想和中国特色社会主义理论体系概论", "Social Science"),
    ("education_science", "教育学", "Social Science"),
    ("teacher_qualification", "教师资格", "Social Science"),
    ("high_school_politics", "高中政治", "Social Science"),
    ("high_school_geography", "高中地理", "Social Science"),
    ("middle_school_politics", "初中政治", "Social Science"),
    ("middle_school_geography", "初中地理", "Social Science"),
    ("modern_chinese_history", "近代史纲要", "Humanities"),
    ("ideological_and_moral_cultivation", "思想道德修养与法律基础", "Humanities"),
    ("logic", "逻辑学", "Humanities"),
    ("law", "法学", "Humanities"),
    ("chinese_language_and_literature", "中国语言文学", "Humanities"),
    ("art_studies", "艺术学", "Humanities"),
    ("professional_tour_guide", "导游资格", "Humanities"),
    ("legal_professional", "法律职业资格", "Humanities"),
    ("high_school_chinese", "高中语文", "Humanities"),
    ("high_school_history", "高中历史", "Humanities"),
    ("middle_school_history", "初中历史", "Humanities"),
    ("civil_servant", "公务员", "Other"),
    ("sports_science", "体育学", "Other"),
    ("plant_protection", "植物保护", "Other"),
    ("basic_medicine", "基础医学", "Other"),
    ("clinical_medicine", "临床医学", "Other"),
    ("urban_and_rural_planner", "注册城乡规划师", "Other"),
    ("accountant", "注册会计师", "Other"),
    ("fire_engineer", "注册消防工程师", "Other"),
    ("environmental_impact_assessment_engineer", "环境影响评价工程师", "Other"),
    ("tax_accountant", "税务师", "Other"),
    ("physician", "医师资格", "Other"),
];

/// CMMLU: (subject, Chinese name, subcategories).
const CMMLU: &[(&str, &str, &[&str])] = &[
    ("agronomy", "农学", &["other"]),
    ("anatomy", "解剖学", &["biology"]),
    ("ancient_chinese", "古汉语", &["linguistics", "china specific"]),
    ("arts", "艺术学", &["arts"]),
    ("astronomy", "天文学", &["physics"]),
    ("business_ethics", "商业伦理", &["business"]),
    ("chinese_civil_service_exam", "中国公务员考试", &["politics", "china specific"]),
    ("chinese_driving_rule", "中国驾驶规则", &["other", "china specific"]),
    ("chinese_food_culture", "中国饮食文化", &["culture", "china specific"]),
    ("chinese_foreign_policy", "中国外交政策", &["politics", "china specific"]),
    ("chinese_history", "中国历史", &["history", "china specific"]),
    ("chinese_literature", "中国文学", &["literature", "china specific"]),
    ("chinese_teacher_qualification", "中国教师资格", &["education", "china specific"]),
    ("clinical_knowledge", "临床知识", &["other"]),
    ("college_actuarial_science", "大学精算学", &["math"]),
    ("college_education", "大学教育学", &["education"]),
    ("college_engineering_hydrology", "大学工程水文学", &["engineering"]),
    ("college_law", "大学法律", &["law"]),
    ("college_mathematics", "大学数学", &["math"]),
    ("college_medical_statistics", "大学医学统计", &["statistics"]),
    ("college_medicine", "大学医学", &["other"]),
    ("computer_science", "计算机科学", &["computer science"]),
    ("computer_security", "计算机安全", &["other"]),
    ("conceptual_physics", "概念物理学", &["physics"]),
    ("construction_project_management", "建设工程管理", &["other", "china specific"]),
    ("economics", "经济学", &["economics"]),
    ("education", "教育学", &["education"]),
    ("electrical_engineering", "电气工程", &["engineering"]),
    ("elementary_chinese", "小学语文", &["linguistics", "china specific"]),
    ("elementary_commonsense", "小学常识", &["other", "china specific"]),
    ("elementary_information_and_technology", "小学信息技术", &["other"]),
    ("elementary_mathematics", "初等数学", &["math"]),
    ("ethnology", "民族学", &["culture", "china specific"]),
    ("food_science", "食品科学", &["other"]),
    ("genetics", "遗传学", &["biology"]),
    ("global_facts", "全球事实", &["global"]),
    ("high_school_biology", "高中生物", &["biology"]),
    ("high_school_chemistry", "高中化学", &["chemistry"]),
    ("high_school_geography", "高中地理", &["geography"]),
    ("high_school_mathematics", "高中数学", &["math"]),
    ("high_school_physics", "高中物理学", &["physics"]),
    ("high_school_politics", "高中政治", &["politics", "china specific"]),
    ("human_sexuality", "人类性行为", &["other"]),
    ("international_law", "国际法学", &["law"]),
    ("journalism", "新闻学", &["sociology"]),
    ("jurisprudence", "法理学", &["law"]),
    ("legal_and_moral_basis", "法律与道德基础", &["other"]),
    ("logical", "逻辑学", &["philosophy"]),
    ("machine_learning", "机器学习", &["computer science"]),
    ("management", "管理学", &["business"]),
    ("marketing", "市场营销", &["business"]),
    ("marxist_theory", "马克思主义理论", &["philosophy"]),
    ("modern_chinese", "现代汉语", &["linguistics", "china specific"]),
    ("nutrition", "营养学", &["other"]),
    ("philosophy", "哲学", &["philosophy"]),
    ("professional_accounting", "专业会计", &["business"]),
    ("professional_law", "专业法学", &["law"]),
    ("professional_medicine", "专业医学", &["other"]),
    ("professional_psychology", "专业心理学", &["psychology"]),
    ("public_relations", "公共关系", &["politics"]),
    ("security_study", "安全研究", &["politics"]),
    ("sociology", "社会学", &["culture"]),
    ("sports_science", "体育学", &["other"]),
    ("traditional_chinese_medicine", "中医中药", &["other", "china specific"]),
    ("virology", "病毒学", &["biology"]),
    ("world_history", "世界历史", &["history"]),
    ("world_religions", "世界宗教", &["global"]),
];

/// CMMLU's subcategory -> category map.
const CMMLU_CATEGORIES: &[(&str, &[&str])] = &[
    ("STEM", &["physics", "chemistry", "biology", "computer science", "math", "engineering", "statistics"]),
    ("Humanities", &["history", "philosophy", "law", "arts", "literature", "global"]),
    ("Social Science", &[
        "linguistics", "business", "politics", "culture", "economics", "geography", "psychology",
        "education", "sociology",
    ]),
    ("Other", &["other"]),
    ("China specific", &["china specific"]),
];

/// The name a prompt uses for a subject: Chinese for C-Eval and CMMLU, the key with
/// underscores as spaces for MMLU. Unknown subjects fall back to the spaced key.
pub fn display_name(kind: BenchmarkKind, subject: &str) -> String {
    let zh = match kind {
        BenchmarkKind::Ceval => CEVAL.iter().find(|s| s.0 == subject).map(|s| s.1),
        BenchmarkKind::Cmmlu => CMMLU.iter().find(|s| s.0 == subject).map(|s| s.1),
        _ => None,
    };
    zh.map(str::to_string).unwrap_or_else(|| subject.replace('_', " "))
}

/// Whether `subject` is one of the benchmark's published subjects.
pub fn is_known(kind: BenchmarkKind, subject: &str) -> bool {
    match kind {
        BenchmarkKind::Mmlu => MMLU.iter().any(|(_, subs)| subs.contains(&subject)),
        BenchmarkKind::Ceval => CEVAL.iter().any(|s| s.0 == subject),
        BenchmarkKind::Cmmlu => CMMLU.iter().any(|s| s.0 == subject),
        BenchmarkKind::Arc | BenchmarkKind::Hellaswag => true,
    }
}

/// The categories a subject counts towards (CMMLU subjects may count in two, e.g.
/// "Humanities" and "China specific"). Unknown subjects count under "Other"; ARC and
/// HellaSwag have no categories.
pub fn categories(kind: BenchmarkKind, subject: &str) -> Vec<String> {
    if !kind.letter_choices() {
        return Vec::new();
    }
    let found: Vec<String> = match kind {
        BenchmarkKind::Mmlu => MMLU
            .iter()
            .filter(|(_, subs)| subs.contains(&subject))
            .map(|(c, _)| c.to_string())
            .collect(),
        BenchmarkKind::Ceval => CEVAL.iter().filter(|s| s.0 == subject).map(|s| s.2.to_string()).collect(),
        BenchmarkKind::Cmmlu => {
            let subcats: &[&str] = CMMLU.iter().find(|s| s.0 == subject).map(|s| s.2).unwrap_or(&[]);
            CMMLU_CATEGORIES
                .iter()
                .filter(|(_, members)| subcats.iter().any(|sc| members.contains(sc)))
                .map(|(c, _)| c.to_string())
                .collect()
        }
        BenchmarkKind::Arc | BenchmarkKind::Hellaswag => Vec::new(),
    };
    if found.is_empty() {
        vec!["Other".to_string()]
    } else {
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_sizes_match_the_releases() {
        assert_eq!(MMLU.iter().map(|(_, s)| s.len()).sum::<usize>(), 57);
        assert_eq!(CEVAL.len(), 52);
        assert_eq!(CMMLU.len(), 67);
    }

    #[test]
    fn names_and_categories() {
        assert_eq!(display_name(BenchmarkKind::Mmlu, "abstract_algebra"), "abstract algebra");
        assert_eq!(display_name(BenchmarkKind::Ceval, "computer_network"), "计算机网络");
        assert_eq!(display_name(BenchmarkKind::Cmmlu, "agronomy"), "农学");
        assert_eq!(categories(BenchmarkKind::Cmmlu, "chinese_history"), vec!["Humanities", "China specific"]);
        assert_eq!(categories(BenchmarkKind::Mmlu, "virology"), vec!["Other"]);
        assert_eq!(categories(BenchmarkKind::Ceval, "clinical_medicine"), vec!["Other"]);
    }
}
