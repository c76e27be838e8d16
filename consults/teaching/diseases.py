"""The kept list of diseases a teaching case is tagged with, to start with (ICD-10 codes);
operators keep it in Django admin afterwards. Migration 0002 seeds it; ensure_kept_list()
adds what is missing (seed_demo, and tests after a transactional test emptied the tables)."""

from __future__ import annotations

from typing import Any

# (code, English, Chinese, ICD-10, body part)
DISEASES = (
    ("acute-ischaemic-stroke", "Acute ischaemic stroke", "急性缺血性脑卒中", "I63", "head"),
    ("intracerebral-haemorrhage", "Intracerebral haemorrhage", "脑出血", "I61", "head"),
    ("subarachnoid-haemorrhage", "Subarachnoid haemorrhage", "蛛网膜下腔出血", "I60", "head"),
    ("subdural-haematoma", "Subdural haematoma", "硬膜下血肿", "S06.5", "head"),
    ("glioma", "Glioma", "胶质瘤", "C71", "head"),
    ("meningioma", "Meningioma", "脑膜瘤", "D32", "head"),
    ("brain-metastases", "Brain metastases", "脑转移瘤", "C79.3", "head"),
    ("small-vessel-disease", "Cerebral small vessel disease", "脑小血管病", "I67.8", "head"),
    ("sinusitis", "Sinusitis", "鼻窦炎", "J32", "head"),
    ("thyroid-nodule", "Thyroid nodule", "甲状腺结节", "E04.1", "neck"),
    ("community-acquired-pneumonia", "Community-acquired pneumonia", "社区获得性肺炎", "J18", "chest"),
    ("pulmonary-tuberculosis", "Pulmonary tuberculosis", "肺结核", "A15", "chest"),
    ("lung-cancer", "Lung cancer", "肺癌", "C34", "chest"),
    ("pulmonary-nodule", "Pulmonary nodule", "肺结节", "R91", "chest"),
    ("pneumothorax", "Pneumothorax", "气胸", "J93", "chest"),
    ("pleural-effusion", "Pleural effusion", "胸腔积液", "J90", "chest"),
    ("copd-emphysema", "COPD and emphysema", "慢性阻塞性肺疾病/肺气肿", "J43", "chest"),
    ("bronchiectasis", "Bronchiectasis", "支气管扩张", "J47", "chest"),
    ("interstitial-lung-disease", "Interstitial lung disease", "间质性肺疾病", "J84", "chest"),
    ("pulmonary-embolism", "Pulmonary embolism", "肺栓塞", "I26", "heart"),
    ("aortic-dissection", "Aortic dissection", "主动脉夹层", "I71.0", "heart"),
    ("heart-failure", "Heart failure", "心力衰竭", "I50", "heart"),
    ("pericardial-effusion", "Pericardial effusion", "心包积液", "I31.3", "heart"),
    ("breast-cancer", "Breast cancer", "乳腺癌", "C50", "breast"),
    ("fibroadenoma", "Fibroadenoma of the breast", "乳腺纤维腺瘤", "D24", "breast"),
    ("hepatocellular-carcinoma", "Hepatocellular carcinoma", "肝细胞癌", "C22.0", "abdomen"),
    ("liver-haemangioma", "Hepatic haemangioma", "肝血管瘤", "D18.0", "abdomen"),
    ("liver-cyst", "Liver cyst", "肝囊肿", "K76.8", "abdomen"),
    ("fatty-liver", "Fatty liver", "脂肪肝", "K76.0", "abdomen"),
    ("cholecystolithiasis", "Gallstones", "胆囊结石", "K80", "abdomen"),
    ("acute-pancreatitis", "Acute pancreatitis", "急性胰腺炎", "K85", "abdomen"),
    ("acute-appendicitis", "Acute appendicitis", "急性阑尾炎", "K35", "abdomen"),
    ("bowel-obstruction", "Bowel obstruction", "肠梗阻", "K56", "abdomen"),
    ("gi-perforation", "Gastrointestinal perforation", "消化道穿孔", "K63.1", "abdomen"),
    ("kidney-stone", "Kidney and ureteric stones", "泌尿系结石", "N20", "abdomen"),
    ("renal-cell-carcinoma", "Renal cell carcinoma", "肾细胞癌", "C64", "abdomen"),
    ("gastric-cancer", "Gastric cancer", "胃癌", "C16", "abdomen"),
    ("colorectal-cancer", "Colorectal cancer", "结直肠癌", "C18", "abdomen"),
    ("uterine-fibroid", "Uterine fibroid", "子宫肌瘤", "D25", "pelvis"),
    ("ovarian-cyst", "Ovarian cyst", "卵巢囊肿", "N83.2", "pelvis"),
    ("ectopic-pregnancy", "Ectopic pregnancy", "异位妊娠", "O00", "pelvis"),
    ("prostate-hyperplasia", "Benign prostatic hyperplasia", "前列腺增生", "N40", "pelvis"),
    ("lumbar-disc-herniation", "Lumbar disc herniation", "腰椎间盘突出症", "M51.2", "spine"),
    ("vertebral-compression-fracture", "Vertebral compression fracture", "椎体压缩性骨折", "M48.5", "spine"),
    ("spinal-metastases", "Spinal metastases", "脊柱转移瘤", "C79.5", "spine"),
    ("distal-radius-fracture", "Distal radius fracture", "桡骨远端骨折", "S52.5", "limbs"),
    ("hip-fracture", "Hip fracture", "髋部骨折", "S72.0", "limbs"),
    ("knee-osteoarthritis", "Knee osteoarthritis", "膝骨关节炎", "M17", "limbs"),
    ("osteosarcoma", "Osteosarcoma", "骨肉瘤", "C40", "limbs"),
    ("non-ossifying-fibroma", "Non-ossifying fibroma", "非骨化性纤维瘤", "D16", "limbs"),
    ("normal-study", "No abnormality (normal study)", "未见异常（正常）", "Z03.9", ""),
)


def ensure_kept_list(disease_model: Any = None) -> int:
    """Add the diseases of DISEASES that are missing; returns how many were added."""
    if disease_model is None:
        from consults.teaching.models import Disease as disease_model
    added = 0
    for code, name, name_zh, icd10, body_part in DISEASES:
        _, created = disease_model.objects.get_or_create(
            code=code, defaults={"name": name, "name_zh": name_zh, "icd10": icd10, "body_part": body_part}
        )
        added += created
    return added
