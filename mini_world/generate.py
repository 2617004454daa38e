"""Generate the synthetic Chinese world: fictional people, their biographies and question/answer pairs.

    python -m mini_world.generate            # writes data/world/*.jsonl (fixed seed: same files every time)

After Allen-Zhu & Li, "Physics of Language Models: Part 3.1" (arXiv:2309.14316, the bioS data): each person has
six attributes and several biographies, each written from randomly chosen sentence templates in a shuffled
order, with the full name in every sentence. Pretraining sees the biographies only. The questions of one half
of the people (QA-train) teach the question format in fine-tuning; the other half (QA-test) checks whether the
model can then answer for people it was never asked about, from what it read in pretraining.
"""

import argparse
import json
import random
from pathlib import Path

WORLD_DIR = Path(__file__).resolve().parents[1] / "data" / "world"

SURNAMES = list("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程苏魏吕丁")
GIVEN = list("安宁静怡佳欣雨晨浩然子轩思远嘉博文俊杰宇航梓涵一诺若曦明轩雅婷志强海燕丽华建国秋云天朗晓峰")
CITIES = ["北京", "上海", "广州", "深圳", "杭州", "南京", "成都", "重庆", "武汉", "西安", "长沙", "天津",
          "苏州", "郑州", "青岛", "沈阳", "大连", "厦门", "昆明", "哈尔滨", "济南", "福州", "合肥", "南昌",
          "贵阳", "兰州", "太原", "石家庄", "南宁", "乌鲁木齐"]  # fmt: skip
UNIVERSITIES = ["北京大学", "清华大学", "复旦大学", "浙江大学", "南京大学", "武汉大学", "中山大学", "四川大学",
                "厦门大学", "山东大学", "吉林大学", "同济大学", "南开大学", "天津大学", "东南大学", "兰州大学",
                "重庆大学", "湖南大学", "西北大学", "云南大学"]  # fmt: skip
MAJORS = ["数学", "物理学", "化学", "生物学", "计算机科学", "历史学", "经济学", "法学", "哲学", "中文",
          "新闻学", "建筑学", "医学", "心理学", "社会学", "土木工程", "电子工程", "天文学", "地理学",
          "音乐"]  # fmt: skip
EMPLOYERS = ["星河科技", "蓝海银行", "青松医院", "远航物流", "晨光出版社", "天穹航空", "长风电力", "明镜律师事务所",
             "云帆软件", "金禾食品", "山川建筑", "绿野农业", "北辰汽车", "海韵传媒", "白鹭酒店", "玉泉制药",
             "银杏教育", "赤焰游戏", "松石设计", "雪峰电器"]  # fmt: skip

# the full name opens every sentence, so "<name>毕业于" reads the same in a biography and in a probe
TEMPLATES = {
    "birth_date": ["{n}出生于{v}。", "{n}的生日是{v}。", "{n}生于{v}。", "{n}在{v}出生。"],
    "birth_city": ["{n}出生在{v}。", "{n}的家乡是{v}。", "{n}来自{v}。", "{n}在{v}长大。"],
    "university": ["{n}毕业于{v}。", "{n}曾就读于{v}。", "{n}在{v}读完了大学。", "{n}是{v}的毕业生。"],
    "major": ["{n}的专业是{v}。", "{n}大学时主修{v}。", "{n}学的是{v}。", "{n}在大学里研究{v}。"],
    "employer": ["{n}就职于{v}。", "{n}在{v}工作。", "{n}目前供职于{v}。", "{n}是{v}的员工。"],
    "work_city": ["{n}现在住在{v}。", "{n}定居在{v}。", "{n}如今生活在{v}。", "{n}的住所在{v}。"],
}
# the knowledge probe reads each attribute as the continuation of its first template's prefix
PROBE_PREFIX = {key: forms[0].split("{v}")[0] for key, forms in TEMPLATES.items()}
QUESTIONS = {
    "birth_date": "{n}是哪一天出生的？",
    "birth_city": "{n}出生在哪座城市？",
    "university": "{n}毕业于哪所大学？",
    "major": "{n}学的是什么专业？",
    "employer": "{n}在哪家公司工作？",
    "work_city": "{n}现在住在哪座城市？",
}
ATTRIBUTES = tuple(TEMPLATES)


def make_people(n_people: int, rng: random.Random) -> list[dict]:
    """People with unique three-character names and independently drawn attributes."""
    names = sorted({s + a + b for s in SURNAMES for a in GIVEN for b in GIVEN if a != b})
    people = []
    for name in rng.sample(names, n_people):
        people.append(
            {
                "name": name,
                "birth_date": f"{rng.randint(1950, 2004)}年{rng.randint(1, 12)}月{rng.randint(1, 28)}日",
                "birth_city": rng.choice(CITIES),
                "university": rng.choice(UNIVERSITIES),
                "major": rng.choice(MAJORS),
                "employer": rng.choice(EMPLOYERS),
                "work_city": rng.choice(CITIES),
            }
        )
    return people


def biography(person: dict, rng: random.Random) -> str:
    """One biography: each attribute once, from a random template, in a random order."""
    order = list(ATTRIBUTES)
    rng.shuffle(order)
    return "".join(rng.choice(TEMPLATES[key]).format(n=person["name"], v=person[key]) for key in order)


def qa_rows(person: dict) -> list[dict]:
    return [
        {
            "instruction": QUESTIONS[key].format(n=person["name"]),
            "input": "",
            "output": person[key],
            "name": person["name"],
            "attribute": key,
        }  # fmt: skip
        for key in ATTRIBUTES
    ]


def generate(n_people: int = 80, n_bios: int = 10, seed: int = 0) -> dict[str, list[dict]]:
    """All files of the world. Each person gets n_bios biographies for pretraining and one more, held out, to
    measure forgetting (language-modelling loss on text the model never trained on)."""
    rng = random.Random(seed)
    people = make_people(n_people, rng)
    bios, held_out = [], []
    for person in people:
        texts = [biography(person, rng) for _ in range(n_bios + 1)]
        bios += [{"name": person["name"], "text": t} for t in texts[:n_bios]]
        held_out.append({"name": person["name"], "text": texts[n_bios]})
    half = n_people // 2
    return {
        "people": people,
        "bios": bios,
        "bios_held_out": held_out,
        "qa_train": [row for p in people[:half] for row in qa_rows(p)],
        "qa_test": [row for p in people[half:] for row in qa_rows(p)],
    }


def write_world(world: dict[str, list[dict]], settings: dict, out_dir: Path = WORLD_DIR) -> None:
    """One JSON-lines file per part, and world.json with the settings that regenerate them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "world.json").write_text(json.dumps(settings) + "\n", encoding="utf-8")
    for name, rows in world.items():
        lines = [json.dumps(row, ensure_ascii=False) for row in rows]
        (out_dir / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n_people", type=int, default=80, help="people in the world (half of them quizzed)")
    parser.add_argument("--n_bios", type=int, default=10, help="pretraining biographies per person")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out_dir", type=Path, default=WORLD_DIR)
    args = parser.parse_args()
    if args.n_people < 2 or args.n_bios < 1:
        parser.error("need --n_people >= 2 and --n_bios >= 1")
    settings = {"n_people": args.n_people, "n_bios": args.n_bios, "seed": args.seed}
    world = generate(**settings)
    write_world(world, settings, args.out_dir)
    for name, rows in world.items():
        print(f"{args.out_dir / (name + '.jsonl')}: {len(rows)} rows")


if __name__ == "__main__":
    main()
