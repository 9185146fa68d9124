#!/usr/bin/env python3
"""Generate the synthetic science-QA and code-QA sets of the sample corpus.

Every document is a question with a worked answer built from a template whose
numbers are drawn from a seeded RNG and whose answer is computed here:
unit conversions, physics formulas, molar masses, arithmetic word problems,
and small Python / Rust programs with their printed output.  Python programs
are executed to obtain their output; Rust programs are limited to integer and
ASCII-string operations whose output is computed by a Python mirror of the
same operations.  Same seed, same files, byte for byte.

    python3 scripts/make_synthetic_qa.py            # writes corpus/sample/...
    python3 scripts/make_synthetic_qa.py --check    # regenerates and compares, then
                                                    # validates every JSONL file of the corpus
"""
import argparse
import contextlib
import io
import json
import math
from fractions import Fraction
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "corpus" / "sample"
SEED = 20240718
N_SCIENCE, N_CODE = 230, 170          # training documents per set
N_VAL_SCIENCE, N_VAL_CODE = 12, 8      # held-out documents (val/synthetic.jsonl)
ZH_SHARE = 0.35                        # share of documents written in Chinese


def num(x, nd=2):
    """Round to nd decimals and drop trailing zeros: 2.50 -> '2.5', 3.0 -> '3'."""
    s = f"{round(x, nd):.{nd}f}"
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def eq(x, nd=2):
    """'=' when x is exact at nd decimals, else '≈'."""
    return "=" if abs(x - round(x, nd)) < 1e-9 else "≈"


def sci(x, digits=3):
    """Scientific notation with `digits` significant figures: 6.02 × 10^23."""
    mantissa, exp = f"{x:.{digits - 1}e}".split("e")
    return f"{mantissa} × 10^{int(exp)}"


def qa(lang, question, answer):
    if lang == "zh":
        return f"问：{question}\n\n答：{answer}"
    return f"Question: {question}\n\nAnswer: {answer}"


# ---------------------------------------------------------------- science QA
G = 9.8            # m/s^2, the value school problems use
R_GAS = 8.314      # J/(mol K)
N_A = 6.022e23     # 1/mol
C_WATER = 4186     # J/(kg K)
C_LIGHT = 3.00e8   # m/s
SOUND = 343        # m/s in air at 20 degrees C

# Standard atomic weights (IUPAC, conventional values), g/mol.
ATOMIC_WEIGHT = {"H": 1.008, "C": 12.011, "N": 14.007, "O": 15.999, "Na": 22.990,
                 "Mg": 24.305, "S": 32.06, "Cl": 35.45, "K": 39.098, "Ca": 40.078,
                 "Mn": 54.938, "Fe": 55.845, "Cu": 63.546}
# formula, parsed composition, English name, Chinese name
COMPOUNDS = [
    ("H2O", {"H": 2, "O": 1}, "water", "水"),
    ("CO2", {"C": 1, "O": 2}, "carbon dioxide", "二氧化碳"),
    ("NaCl", {"Na": 1, "Cl": 1}, "sodium chloride", "氯化钠"),
    ("C6H12O6", {"C": 6, "H": 12, "O": 6}, "glucose", "葡萄糖"),
    ("H2SO4", {"H": 2, "S": 1, "O": 4}, "sulfuric acid", "硫酸"),
    ("CaCO3", {"Ca": 1, "C": 1, "O": 3}, "calcium carbonate", "碳酸钙"),
    ("NH3", {"N": 1, "H": 3}, "ammonia", "氨"),
    ("CH4", {"C": 1, "H": 4}, "methane", "甲烷"),
    ("C2H5OH", {"C": 2, "H": 6, "O": 1}, "ethanol", "乙醇"),
    ("NaOH", {"Na": 1, "O": 1, "H": 1}, "sodium hydroxide", "氢氧化钠"),
    ("KCl", {"K": 1, "Cl": 1}, "potassium chloride", "氯化钾"),
    ("HCl", {"H": 1, "Cl": 1}, "hydrogen chloride", "氯化氢"),
    ("Fe2O3", {"Fe": 2, "O": 3}, "iron(III) oxide", "氧化铁"),
    ("MgO", {"Mg": 1, "O": 1}, "magnesium oxide", "氧化镁"),
    ("NaHCO3", {"Na": 1, "H": 1, "C": 1, "O": 3}, "sodium bicarbonate", "碳酸氢钠"),
    ("KMnO4", {"K": 1, "Mn": 1, "O": 4}, "potassium permanganate", "高锰酸钾"),
    ("CuSO4", {"Cu": 1, "S": 1, "O": 4}, "copper(II) sulfate", "硫酸铜"),
    ("C12H22O11", {"C": 12, "H": 22, "O": 11}, "sucrose", "蔗糖"),
    ("CaCl2", {"Ca": 1, "Cl": 2}, "calcium chloride", "氯化钙"),
    ("HNO3", {"H": 1, "N": 1, "O": 3}, "nitric acid", "硝酸"),
]


def molar_mass(composition):
    return sum(ATOMIC_WEIGHT[el] * n for el, n in composition.items())


def sci_speed(rng, lang):
    v = rng.choice([18, 36, 45, 54, 72, 90, 108, 120, 144, 180, 216, 250, 300, 350])
    what = rng.choice([("a train", "一列火车"), ("a car", "一辆汽车"), ("a cyclist", "一位骑行者"),
                       ("a ship", "一艘船"), ("a high-speed train", "一列高铁")])
    if what[0] == "a cyclist":
        v = rng.choice([18, 20, 24, 27, 30, 36])
    ms = v / 3.6
    if lang == "zh":
        return qa(lang, f"{what[1]}以 {v} km/h 的速度行驶，这个速度合多少 m/s？",
                  f"1 km = 1000 m，1 h = 3600 s，所以 1 km/h = 1000/3600 m/s = 1/3.6 m/s。"
                  f"{v} km/h ÷ 3.6 = {num(ms)} m/s。以这个速度，{what[1][2:]}每分钟前进 {num(ms * 60, 1)} 米。")
    return qa(lang, f"{what[0].capitalize()} travels at {v} km/h. What is its speed in metres per second?",
              f"One kilometre is 1000 m and one hour is 3600 s, so 1 km/h = 1000/3600 m/s = 1/3.6 m/s. "
              f"Therefore {v} km/h ÷ 3.6 = {num(ms)} m/s. At this speed it covers {num(ms * 60, 1)} m every minute.")


def off_by_en(diff):
    if abs(diff) < 0.05:
        return "which happens to be exact here."
    return f"off by {'' if abs(diff - round(diff, 1)) < 1e-9 else 'about '}{num(abs(diff), 1)} degrees."


def off_by_zh(diff):
    if abs(diff) < 0.05:
        return "在这里恰好与精确值相等。"
    return f"与精确值相差{'' if abs(diff - round(diff, 1)) < 1e-9 else '约'} {num(abs(diff), 1)} 度。"


def sci_temperature(rng, lang):
    if rng.random() < 0.5:
        c = rng.choice([-40, -20, -10, -5, 0, 5, 12, 15, 20, 25, 30, 37, 40, 60, 100, 180, 220])
        f = c * 9 / 5 + 32
        if lang == "zh":
            return qa(lang, f"{c} °C 等于多少华氏度？",
                      f"换算公式是 °F = °C × 9/5 + 32。代入得 {c} × 9/5 + 32 = {num(c * 9 / 5)} + 32 = {num(f)} °F。"
                      f"粗略心算可以用“乘二加三十”：{c} × 2 + 30 = {2 * c + 30}，" + off_by_zh(2 * c + 30 - f))
        return qa(lang, f"Convert {c} °C to degrees Fahrenheit.",
                  f"Use °F = °C × 9/5 + 32. Here {c} × 9/5 = {num(c * 9 / 5)}, and adding 32 gives {num(f)} °F. "
                  f"The mental shortcut \"double it and add 30\" gives {2 * c + 30}, " + off_by_en(2 * c + 30 - f)
                  + (" Note that -40 is the one temperature that reads the same on both scales." if c == -40 else ""))
    f = rng.choice([-4, 14, 32, 50, 59, 68, 77, 86, 98.6, 104, 212, 350, 400, 451])
    c = (f - 32) * 5 / 9
    if lang == "zh":
        return qa(lang, f"{num(f, 1)} °F 等于多少摄氏度？",
                  f"换算公式是 °C = (°F − 32) × 5/9。代入得 ({num(f, 1)} − 32) × 5/9 = {num(f - 32, 1)} × 5/9 {eq(c, 1)} {num(c, 1)} °C。"
                  f"粗略心算可以用“减三十再除以二”：({num(f, 1)} − 30) ÷ 2 = {num((f - 30) / 2, 1)}，" + off_by_zh((f - 30) / 2 - c))
    return qa(lang, f"Convert {num(f, 1)} °F to degrees Celsius.",
              f"Use °C = (°F − 32) × 5/9. Subtracting 32 gives {num(f - 32, 1)}, and multiplying by 5/9 "
              f"gives {'' if eq(c, 1) == '=' else 'about '}{num(c, 1)} °C. The shortcut \"subtract 30 and halve\" gives "
              f"{num((f - 30) / 2, 1)}, " + off_by_en((f - 30) / 2 - c))


def sci_free_fall(rng, lang):
    h = rng.choice([5, 10, 20, 30, 45, 50, 80, 100, 125, 180, 245])
    t = math.sqrt(2 * h / G)
    v = G * t
    if lang == "zh":
        return qa(lang, f"一个小球从 {h} m 高处由静止自由下落，不计空气阻力，取 g = 9.8 m/s²。它落地需要多长时间？落地时的速度是多少？",
                  f"自由落体满足 h = ½gt²，所以 t = √(2h/g) = √(2 × {h} / 9.8) = √{num(2 * h / G, 3)} ≈ {num(t)} s。"
                  f"落地速度 v = gt ≈ 9.8 × {num(t)} ≈ {num(v, 1)} m/s，也可以用 v = √(2gh) 直接求得，结果相同。")
    return qa(lang, f"A ball is dropped from rest from a height of {h} m. Ignoring air resistance and taking g = 9.8 m/s², "
                    f"how long does it take to reach the ground, and how fast is it moving when it lands?",
              f"For free fall from rest, h = ½gt², so t = √(2h/g) = √(2 × {h} / 9.8) = √{num(2 * h / G, 3)} ≈ {num(t)} s. "
              f"The landing speed is v = gt ≈ 9.8 × {num(t)} ≈ {num(v, 1)} m/s. The formula v = √(2gh) gives the same result "
              f"without computing the time first.")


def sci_acceleration(rng, lang):
    u = rng.choice([0, 0, 5, 10, 12, 15])
    v = u + rng.choice([5, 10, 15, 20, 25])
    t = rng.choice([2, 4, 5, 8, 10])
    a = (v - u) / t
    s = (u + v) / 2 * t
    if lang == "zh":
        return qa(lang, f"一辆汽车沿直线做匀加速运动，速度在 {t} s 内从 {u} m/s 增加到 {v} m/s。求它的加速度和这段时间内行驶的距离。",
                  f"加速度 a = (v − u)/t = ({v} − {u}) / {t} = {num(a)} m/s²。匀加速运动的平均速度是 (u + v)/2 = {num((u + v) / 2)} m/s，"
                  f"所以距离 s = {num((u + v) / 2)} × {t} = {num(s)} m。用 s = ut + ½at² 验算：{u} × {t} + ½ × {num(a)} × {t}² = {num(u * t + 0.5 * a * t * t)} m。")
    return qa(lang, f"A car accelerates uniformly in a straight line from {u} m/s to {v} m/s in {t} s. "
                    f"What is its acceleration, and how far does it travel in that time?",
              f"The acceleration is a = (v − u)/t = ({v} − {u}) / {t} = {num(a)} m/s². Under uniform acceleration the average "
              f"speed is (u + v)/2 = {num((u + v) / 2)} m/s, so the distance is {num((u + v) / 2)} × {t} = {num(s)} m. "
              f"Check with s = ut + ½at²: {u} × {t} + ½ × {num(a)} × {t}² = {num(u * t + 0.5 * a * t * t)} m.")


def sci_kinetic(rng, lang):
    m = rng.choice([0.06, 0.145, 0.43, 2, 5, 60, 70, 80, 1200, 1500])
    v = rng.choice([2, 3, 5, 8, 10, 12, 15, 20, 25, 30])
    e = 0.5 * m * v * v
    e_txt = f"{num(e)} J" if e < 10000 else f"{num(e)} J ({num(e / 1000, 1)} kJ)"
    if lang == "zh":
        return qa(lang, f"质量为 {num(m, 3)} kg 的物体以 {v} m/s 的速度运动，它的动能是多少？如果速度加倍，动能变为多少？",
                  f"动能 E = ½mv² = ½ × {num(m, 3)} × {v}² = ½ × {num(m, 3)} × {v * v} = {e_txt}。"
                  f"动能与速度的平方成正比，速度加倍时动能变为原来的 4 倍，即 {num(4 * e)} J。")
    return qa(lang, f"An object of mass {num(m, 3)} kg moves at {v} m/s. What is its kinetic energy, and what would it be at twice the speed?",
              f"Kinetic energy is E = ½mv² = ½ × {num(m, 3)} × {v}² = ½ × {num(m, 3)} × {v * v} = {e_txt}. "
              f"Because the energy depends on the square of the speed, doubling the speed multiplies it by 4, giving {num(4 * e)} J.")


def sci_ohm(rng, lang):
    V = rng.choice([1.5, 3, 4.5, 5, 6, 9, 12, 24, 110, 220, 230])
    R = rng.choice([2, 4, 5, 8, 10, 12, 15, 20, 47, 100, 220, 330, 470, 1000])
    I = V / R
    P = V * I
    i_txt = f"{num(I, 3)} A" if I >= 0.1 else f"{num(I, 4)} A ({num(I * 1000, 1)} mA)"
    if lang == "zh":
        return qa(lang, f"把一个 {R} Ω 的电阻接在 {num(V, 1)} V 的电源上，通过它的电流是多少？电阻消耗的功率是多少？",
                  f"由欧姆定律 I = U/R = {num(V, 1)} / {R} = {i_txt}。功率 P = UI = U²/R = {num(V, 1)}² / {R} {eq(P, 3)} {num(P, 3)} W。")
    return qa(lang, f"A {R} Ω resistor is connected across a {num(V, 1)} V supply. What current flows through it, and how much power does it dissipate?",
              f"By Ohm's law, I = V/R = {num(V, 1)} / {R} = {i_txt}. The power is P = VI = V²/R = {num(V, 1)}² / {R} {eq(P, 3)} {num(P, 3)} W.")


def sci_density(rng, lang):
    rho, name_en, name_zh = rng.choice([(0.5, "a piece of pine wood", "一块松木"), (0.92, "a block of ice", "一块冰"),
                                        (2.7, "a block of aluminium", "一块铝"), (7.87, "a piece of iron", "一块铁"),
                                        (11.3, "a piece of lead", "一块铅"), (0.8, "a cork-and-resin float", "一个浮子"),
                                        (1.2, "a block of acrylic plastic", "一块亚克力塑料"), (8.96, "a piece of copper", "一块铜")])
    vol = rng.choice([10, 20, 25, 40, 50, 80, 100, 125, 200])
    mass = rho * vol
    floats = rho < 1.0
    if lang == "zh":
        return qa(lang, f"{name_zh}的体积是 {vol} cm³，质量是 {num(mass, 1)} g。它的密度是多少？放入水中会浮起来还是沉下去？",
                  f"密度 ρ = m/V = {num(mass, 1)} / {vol} = {num(rho, 2)} g/cm³。水的密度约为 1 g/cm³，"
                  + ("它的密度比水小，所以会浮在水面上。" if floats else "它的密度比水大，所以会沉入水底。"))
    return qa(lang, f"{name_en.capitalize()} has a volume of {vol} cm³ and a mass of {num(mass, 1)} g. What is its density, and will it float in water?",
              f"Density is mass divided by volume: ρ = {num(mass, 1)} / {vol} = {num(rho, 2)} g/cm³. Water has a density of about 1 g/cm³, "
              + ("so this object is less dense than water and floats." if floats else "so this object is denser than water and sinks."))


def sci_wave(rng, lang):
    f = rng.choice([110, 220, 256, 262, 440, 512, 880, 1000, 2000, 5000])
    lam = SOUND / f
    if lang == "zh":
        return qa(lang, f"频率为 {f} Hz 的声波在 20 °C 的空气中传播，声速取 343 m/s，它的波长是多少？",
                  f"波速、频率和波长满足 v = fλ，所以 λ = v/f = 343 / {f} {eq(lam, 3)} {num(lam, 3)} m，约 {num(lam * 100, 1)} cm。")
    return qa(lang, f"A sound wave of frequency {f} Hz travels through air at 20 °C, where the speed of sound is 343 m/s. What is its wavelength?",
              f"Wave speed, frequency and wavelength are related by v = fλ, so λ = v/f = 343 / {f} {eq(lam, 3)} {num(lam, 3)} m, "
              f"or about {num(lam * 100, 1)} cm.")


def sci_gas(rng, lang):
    n = rng.choice([0.5, 1, 1.5, 2, 3])
    t_c = rng.choice([0, 20, 25, 27, 100])
    T = t_c + 273.15
    V_l = rng.choice([10, 20, 22.4, 24, 50])
    P = n * R_GAS * T / (V_l / 1000)
    if lang == "zh":
        return qa(lang, f"{num(n, 1)} mol 理想气体在 {t_c} °C 时装在容积为 {num(V_l, 1)} L 的容器中，气体的压强是多少？（R = 8.314 J/(mol·K)）",
                  f"由理想气体状态方程 pV = nRT，先把单位换成国际单位：T = {t_c} + 273.15 = {num(T, 2)} K，V = {num(V_l, 1)} L = {num(V_l / 1000, 4)} m³。"
                  f"p = nRT/V = {num(n, 1)} × 8.314 × {num(T, 2)} / {num(V_l / 1000, 4)} ≈ {num(P, 0)} Pa，约 {num(P / 1000, 1)} kPa。")
    return qa(lang, f"{num(n, 1)} mol of an ideal gas at {t_c} °C is held in a {num(V_l, 1)} L container. What is its pressure? (R = 8.314 J/(mol·K))",
              f"Use the ideal gas law pV = nRT in SI units: T = {t_c} + 273.15 = {num(T, 2)} K and V = {num(V_l, 1)} L = {num(V_l / 1000, 4)} m³. "
              f"Then p = nRT/V = {num(n, 1)} × 8.314 × {num(T, 2)} / {num(V_l / 1000, 4)} ≈ {num(P, 0)} Pa, which is about {num(P / 1000, 1)} kPa.")


def _composition_sum(comp):
    parts = [f"{n} × {ATOMIC_WEIGHT[el]}" if n > 1 else f"{ATOMIC_WEIGHT[el]}" for el, n in comp.items()]
    names = ", ".join(f"{el} {ATOMIC_WEIGHT[el]}" for el in comp)
    return " + ".join(parts), names


def sci_molar_mass(rng, lang):
    formula, comp, en, zh = rng.choice(COMPOUNDS)
    M = molar_mass(comp)
    terms, names = _composition_sum(comp)
    if rng.random() < 0.4:
        if lang == "zh":
            return qa(lang, f"{zh}（{formula}）的摩尔质量是多少？",
                      f"摩尔质量等于化学式中各原子的相对原子质量之和。取相对原子质量 {names}，"
                      f"M({formula}) = {terms} = {num(M, 3)} g/mol。")
        return qa(lang, f"What is the molar mass of {en} ({formula})?",
                  f"Add the atomic weights of all atoms in the formula. With atomic weights {names}: "
                  f"M({formula}) = {terms} = {num(M, 3)} g/mol.")
    m = rng.choice([1, 2, 5, 9, 10, 18, 20, 25, 44, 50, 100, 250, 500])
    n = m / M
    molecules = n * N_A
    if lang == "zh":
        return qa(lang, f"{m} g {zh}（{formula}）含有多少摩尔？大约含有多少个分子（或化学式单位）？",
                  f"先求摩尔质量：M({formula}) = {terms} = {num(M, 3)} g/mol（相对原子质量 {names}）。"
                  f"物质的量 n = m/M = {m} / {num(M, 3)} ≈ {num(n, 4)} mol。"
                  f"乘以阿伏加德罗常数 6.022 × 10^23 /mol，约含 {sci(molecules)} 个。")
    return qa(lang, f"How many moles are in {m} g of {en} ({formula}), and about how many formula units is that?",
              f"First the molar mass: M({formula}) = {terms} = {num(M, 3)} g/mol (atomic weights {names}). "
              f"Then n = m/M = {m} / {num(M, 3)} ≈ {num(n, 4)} mol. Multiplying by Avogadro's number, 6.022 × 10^23 per mole, "
              f"gives about {sci(molecules)} formula units.")


def sci_work_power(rng, lang):
    m = rng.choice([10, 20, 25, 50, 60, 75, 100, 500])
    h = rng.choice([2, 3, 4, 5, 10, 12, 15])
    t = rng.choice([2, 4, 5, 6, 10, 20, 30])
    W = m * G * h
    P = W / t
    if lang == "zh":
        return qa(lang, f"一台起重机在 {t} s 内把质量为 {m} kg 的货物匀速提升 {h} m，取 g = 9.8 m/s²。它对货物做了多少功？功率是多少？",
                  f"匀速提升时拉力等于重力 mg = {m} × 9.8 = {num(m * G, 1)} N。功 W = mgh = {num(m * G, 1)} × {h} = {num(W, 1)} J。"
                  f"功率 P = W/t = {num(W, 1)} / {t} = {num(P, 1)} W。")
    return qa(lang, f"A hoist lifts a {m} kg load at constant speed through a height of {h} m in {t} s. Taking g = 9.8 m/s², "
                    f"how much work does it do on the load, and what is its power output?",
              f"At constant speed the lifting force equals the weight, mg = {m} × 9.8 = {num(m * G, 1)} N. The work done is "
              f"W = mgh = {num(m * G, 1)} × {h} = {num(W, 1)} J, and the power is P = W/t = {num(W, 1)} / {t} = {num(P, 1)} W.")


def sci_heat(rng, lang):
    m = rng.choice([0.2, 0.25, 0.5, 1, 1.5, 2, 5])
    t0 = rng.choice([10, 15, 20, 25])
    t1 = rng.choice([40, 60, 80, 100])
    Q = m * C_WATER * (t1 - t0)
    if lang == "zh":
        return qa(lang, f"把 {num(m, 2)} kg 水从 {t0} °C 加热到 {t1} °C，需要吸收多少热量？（水的比热容取 4186 J/(kg·°C)）",
                  f"Q = cmΔt = 4186 × {num(m, 2)} × ({t1} − {t0}) = 4186 × {num(m, 2)} × {t1 - t0} = {num(Q, 0)} J，约 {num(Q / 1000, 1)} kJ。"
                  f"如果用功率为 1000 W 的电热水壶且不计热量损失，大约需要 {num(Q / 1000, 0)} s。")
    return qa(lang, f"How much heat is needed to warm {num(m, 2)} kg of water from {t0} °C to {t1} °C? (Specific heat of water: 4186 J/(kg·°C).)",
              f"Q = mcΔT = {num(m, 2)} × 4186 × ({t1} − {t0}) = {num(m, 2)} × 4186 × {t1 - t0} = {num(Q, 0)} J, about {num(Q / 1000, 1)} kJ. "
              f"A 1000 W kettle with no heat losses would need about {num(Q / 1000, 0)} s to supply it.")


def sci_light_time(rng, lang):
    # (English stem, Chinese stem, distance in km): mean Earth-Moon and Earth-Sun distances, geostationary altitude,
    # and the Earth-Mars distance at the 2003 close approach.
    stem_en, stem_zh, d_km = rng.choice([("The Moon is on average about {d} km from Earth.", "月球与地球的平均距离约为 {d} km。", 384400),
                                         ("The Sun is on average about {d} km from Earth.", "太阳与地球的平均距离约为 {d} km。", 149600000),
                                         ("A geostationary satellite orbits about {d} km above the equator.", "地球静止轨道卫星位于赤道上空约 {d} km 处。", 35786),
                                         ("At its close approach in 2003, Mars was about {d} km from Earth.", "2003 年火星最接近地球时，两者相距约 {d} km。", 55760000)])
    t = d_km * 1000 / C_LIGHT
    t_txt = f"{num(t, 3)} s" if t < 60 else f"{num(t, 0)} s, about {num(t / 60, 1)} minutes"
    t_zh = f"{num(t, 3)} s" if t < 60 else f"{num(t, 0)} s，约 {num(t / 60, 1)} 分钟"
    if lang == "zh":
        return qa(lang, stem_zh.format(d=d_km) + "光走过这段距离需要多长时间？（光速取 3.00 × 10^8 m/s）",
                  f"先换算单位：{d_km} km = {sci(d_km * 1000, 4)} m。t = d/c = {sci(d_km * 1000, 4)} / (3.00 × 10^8) ≈ {t_zh}。")
    return qa(lang, stem_en.format(d=d_km) + " How long does light take to travel that distance? (c = 3.00 × 10^8 m/s)",
              f"Convert to metres: {d_km} km = {sci(d_km * 1000, 4)} m. Then t = d/c = {sci(d_km * 1000, 4)} / (3.00 × 10^8) ≈ {t_txt}.")


def sci_units(rng, lang):
    kind = rng.choice(["mile", "inch", "pound", "kwh"])
    if kind == "mile":
        x = rng.choice([1, 3, 5, 10, 13.1, 26.2, 60, 100])
        y = x * 1.609344
        if lang == "zh":
            return qa(lang, f"{num(x, 1)} 英里等于多少千米？", f"1959 年的国际协议把 1 英里定义为恰好 1.609344 km，所以 {num(x, 1)} 英里 = {num(x, 1)} × 1.609344 {eq(y)} {num(y, 2)} km。反过来，1 km ≈ 0.621 英里。")
        return qa(lang, f"How many kilometres are {num(x, 1)} miles?",
                  f"One mile is defined as exactly 1.609344 km, so {num(x, 1)} miles = {num(x, 1)} × 1.609344 {eq(y)} {num(y, 2)} km.")
    if kind == "inch":
        x = rng.choice([6, 12, 13.3, 15.6, 24, 27, 32, 55, 65])
        y = x * 2.54
        if lang == "zh":
            return qa(lang, f"一块屏幕的对角线长 {num(x, 1)} 英寸，合多少厘米？", f"1 英寸定义为恰好 2.54 cm，所以 {num(x, 1)} × 2.54 {eq(y)} {num(y, 2)} cm。屏幕尺寸指的是对角线长度，而不是宽度。")
        return qa(lang, f"A screen has a diagonal of {num(x, 1)} inches. What is that in centimetres?",
                  f"One inch is exactly 2.54 cm, so {num(x, 1)} × 2.54 {eq(y)} {num(y, 2)} cm. Screen sizes are measured along the diagonal, not the width.")
    if kind == "pound":
        x = rng.choice([1, 5, 10, 50, 100, 150, 200])
        y = x * 0.45359237
        if lang == "zh":
            return qa(lang, f"{x} 磅等于多少千克？", f"1959 年的国际协议把 1 磅定义为恰好 0.45359237 kg，所以 {x} 磅 = {x} × 0.45359237 {eq(y, 3)} {num(y, 3)} kg。反过来，1 kg ≈ 2.205 磅。")
        return qa(lang, f"Convert {x} pounds to kilograms.",
                  f"One pound is exactly 0.45359237 kg, so {x} lb × 0.45359237 {eq(y, 3)} {num(y, 3)} kg.")
    x = rng.choice([0.5, 1, 2, 3.5, 10, 12])
    w = rng.choice([60, 100, 800, 1200, 2000])
    h = x * 1000 / w
    if lang == "zh":
        return qa(lang, f"{num(x, 1)} kWh 的电能合多少焦耳？可以让 {w} W 的电器工作多长时间？",
                  f"1 kWh = 1000 W × 3600 s = 3.6 × 10^6 J，所以 {num(x, 1)} kWh = {sci(x * 3.6e6, 3)} J。"
                  f"工作时间 t = {num(x, 1)} × 1000 Wh / {w} W {eq(h)} {num(h, 2)} h。")
    return qa(lang, f"How many joules are in {num(x, 1)} kWh, and how long could that energy run a {w} W appliance?",
              f"1 kWh = 1000 W × 3600 s = 3.6 × 10^6 J, so {num(x, 1)} kWh = {sci(x * 3.6e6, 3)} J. "
              f"The running time is {num(x, 1)} × 1000 Wh / {w} W {eq(h)} {num(h, 2)} hours.")


# ------------------------------------------------------- arithmetic problems
NAMES_EN = ["Ana", "Ben", "Chloe", "David", "Emma", "Farid", "Grace", "Hiro", "Isla", "Jon", "Keiko", "Liam", "Mei", "Nora"]
NAMES_ZH = ["小明", "小红", "小刚", "小丽", "王阿姨", "李叔叔", "张老师", "小军", "小芳", "陈师傅"]
ITEMS = [("notebook", "本笔记本", 4.5), ("pen", "支笔", 1.2), ("apple", "个苹果", 0.6), ("loaf of bread", "个面包", 2.8),
         ("bottle of milk", "瓶牛奶", 1.75), ("ticket", "张票", 12.5), ("box of tea", "盒茶叶", 8.4)]


def math_shopping(rng, lang):
    en, zh, price = rng.choice(ITEMS)
    n = rng.randint(2, 12)
    total = round(price * n, 2)
    paid = next(p for p in (5, 10, 20, 50, 100, 200) if p >= total)
    change = round(paid - total, 2)
    if lang == "zh":
        who = rng.choice(NAMES_ZH)
        item = zh
        return qa(lang, f"{who}买了 {n} {item}，每{item[0]} {num(price)} 元，付了 {paid} 元，应找回多少钱？",
                  f"总价 = 单价 × 数量 = {num(price)} × {n} = {num(total)} 元。找回 {paid} − {num(total)} = {num(change)} 元。"
                  f"验算：{num(total)} + {num(change)} = {paid} 元。")
    who = rng.choice(NAMES_EN)
    plural = en + "s" if not en.startswith(("loaf", "bottle", "box")) else en.replace("loaf", "loaves").replace("bottle", "bottles").replace("box", "boxes")
    return qa(lang, f"{who} buys {n} {plural} at {num(price)} each and pays with a {paid} note. How much change should {who} get?",
              f"The total cost is {n} × {num(price)} = {num(total)}. The change is {paid} − {num(total)} = {num(change)}. "
              f"Check: {num(total)} + {num(change)} = {paid}.")


def math_discount(rng, lang):
    price = rng.choice([40, 60, 80, 120, 150, 250, 399, 800])
    d = rng.choice([10, 15, 20, 25, 30, 40])
    tax = rng.choice([5, 8, 10, 13, 20])
    after = price * (1 - d / 100)
    final = after * (1 + tax / 100)
    if lang == "zh":
        return qa(lang, f"一件商品原价 {price} 元，先降价 {d}%，再加收 {tax}% 的税，最后要付多少钱？",
                  f"降价后价格 = {price} × (1 − {d}%) = {price} × {num(1 - d / 100)} = {num(after)} 元。"
                  f"加税后 = {num(after)} × (1 + {tax}%) = {num(after)} × {num(1 + tax / 100)} {eq(final)} {num(final)} 元。"
                  f"注意先打折后加税与先加税后打折的结果相同，因为乘法满足交换律。")
    return qa(lang, f"A jacket costs {price}. It is discounted by {d}%, and then a sales tax of {tax}% is added. What is the final price?",
              f"After the discount the price is {price} × (1 − {d}/100) = {price} × {num(1 - d / 100)} = {num(after)}. "
              f"Adding tax gives {num(after)} × {num(1 + tax / 100)} {eq(final)} {num(final)}. The order does not matter: applying the tax first "
              f"and the discount second gives the same result, because multiplication is commutative.")


def math_work_rate(rng, lang):
    a, b = rng.choice([(2, 3), (3, 6), (4, 12), (5, 20), (6, 3), (10, 15), (4, 6), (8, 24), (12, 4)])
    t = a * b / (a + b)
    rate = Fraction(1, a) + Fraction(1, b)
    rate_txt = f"{a + b}/{a * b}" + ("" if rate.denominator == a * b else f" = {rate.numerator}/{rate.denominator}")
    t_frac = 1 / rate
    t_txt = num(t) if t_frac.denominator == 1 else f"{t_frac.numerator}/{t_frac.denominator} {eq(t)} {num(t)}"
    if lang == "zh":
        return qa(lang, f"一项工作，甲单独做需要 {a} 小时完成，乙单独做需要 {b} 小时完成。两人合作需要多少小时？",
                  f"甲每小时完成工作的 1/{a}，乙每小时完成 1/{b}，合作每小时完成 1/{a} + 1/{b} = {rate_txt}。"
                  f"所以合作需要 {t_txt} 小时。")
    return qa(lang, f"One pipe fills a tank in {a} hours and another fills it in {b} hours. How long do they take working together?",
              f"Per hour the first pipe fills 1/{a} of the tank and the second 1/{b}. Together they fill 1/{a} + 1/{b} = {rate_txt} "
              f"of the tank per hour, so the tank is full after {t_txt} hours.")


def math_ratio(rng, lang):
    a, b = rng.choice([(1, 2), (2, 3), (3, 5), (1, 4), (4, 5), (3, 7), (5, 7)])
    k = rng.choice([10, 12, 20, 25, 40, 50, 100])
    total = (a + b) * k
    if lang == "zh":
        x, y = rng.sample(NAMES_ZH, 2)
        return qa(lang, f"{x}和{y}按 {a}:{b} 的比例分 {total} 元，各分得多少？",
                  f"总份数为 {a} + {b} = {a + b}，每份 {total} ÷ {a + b} = {k} 元。{x}分得 {a} × {k} = {a * k} 元，{y}分得 {b} × {k} = {b * k} 元，合计 {total} 元。")
    x, y = rng.sample(NAMES_EN, 2)
    return qa(lang, f"{x} and {y} share {total} in the ratio {a}:{b}. How much does each receive?",
              f"There are {a} + {b} = {a + b} equal parts, each worth {total} ÷ {a + b} = {k}. {x} receives {a} × {k} = {a * k} and "
              f"{y} receives {b} × {k} = {b * k}; together that is {total}.")


def math_trains(rng, lang):
    v1 = rng.choice([60, 70, 80, 90, 120])
    v2 = rng.choice([40, 50, 60, 100, 110])
    t = rng.choice([1.5, 2, 2.5, 3, 4])
    d = (v1 + v2) * t
    if lang == "zh":
        return qa(lang, f"两地相距 {num(d)} km，甲车以 {v1} km/h、乙车以 {v2} km/h 的速度同时从两地出发相向而行，经过多长时间相遇？相遇时甲车行驶了多远？",
                  f"相向而行时两车的距离每小时缩短 {v1} + {v2} = {v1 + v2} km，所以相遇时间 = {num(d)} ÷ {v1 + v2} = {num(t)} 小时。"
                  f"甲车行驶了 {v1} × {num(t)} = {num(v1 * t)} km。")
    return qa(lang, f"Two towns are {num(d)} km apart. A train leaves each town at the same time, heading towards the other, at {v1} km/h and {v2} km/h. "
                    f"When do they meet, and how far has the first train travelled?",
              f"The gap closes at {v1} + {v2} = {v1 + v2} km/h, so they meet after {num(d)} ÷ {v1 + v2} = {num(t)} hours. "
              f"By then the first train has covered {v1} × {num(t)} = {num(v1 * t)} km.")


def math_average(rng, lang):
    k = rng.randint(4, 6)
    scores = [rng.randint(55, 100) for _ in range(k)]
    mean = sum(scores) / k
    target = min(100, math.ceil(mean) + rng.choice([1, 2, 3]))
    need = target * (k + 1) - sum(scores)
    scores_txt = ", ".join(map(str, scores))
    if lang == "zh":
        who = rng.choice(NAMES_ZH)
        ans = (f"{k} 次成绩总和为 {' + '.join(map(str, scores))} = {sum(scores)}，平均分 {sum(scores)} ÷ {k} ≈ {num(mean)} 分。"
               f"要使 {k + 1} 次的平均分达到 {target} 分，总分需要 {target} × {k + 1} = {target * (k + 1)} 分，下一次至少要考 {target * (k + 1)} − {sum(scores)} = {need} 分")
        ans += "。" if need <= 100 else "，超过了满分 100 分，所以这个目标无法实现。"
        return qa(lang, f"{who}前 {k} 次测验的成绩是 {scores_txt}（满分 100）。平均分是多少？下一次至少考多少分，才能使平均分达到 {target} 分？", ans)
    who = rng.choice(NAMES_EN)
    ans = (f"The {k} scores add up to {' + '.join(map(str, scores))} = {sum(scores)}, so the mean is {sum(scores)} ÷ {k} ≈ {num(mean)}. "
           f"For a mean of {target} over {k + 1} tests the total must be {target} × {k + 1} = {target * (k + 1)}, so the next score must be at least "
           f"{target * (k + 1)} − {sum(scores)} = {need}")
    ans += "." if need <= 100 else ", which is more than the maximum of 100, so the target cannot be reached."
    return qa(lang, f"{who}'s first {k} test scores (out of 100) are {scores_txt}. What is the average, and what score on the next test "
                    f"would raise the average to {target}?", ans)


def math_garden(rng, lang):
    L = rng.choice([8, 10, 12, 15, 20])
    W = rng.choice([5, 6, 8, 10])
    p = rng.choice([1, 1.5, 2])
    outer = (L + 2 * p) * (W + 2 * p)
    path = outer - L * W
    if lang == "zh":
        return qa(lang, f"一块长 {L} m、宽 {W} m 的长方形花园四周修一条宽 {num(p)} m 的小路。小路的面积是多少？",
                  f"连同小路在内的大长方形长 {L} + 2 × {num(p)} = {num(L + 2 * p)} m，宽 {W} + 2 × {num(p)} = {num(W + 2 * p)} m，"
                  f"面积 {num(L + 2 * p)} × {num(W + 2 * p)} = {num(outer)} m²。减去花园面积 {L} × {W} = {L * W} m²，小路面积为 {num(path)} m²。")
    return qa(lang, f"A rectangular garden measures {L} m by {W} m and is surrounded by a path {num(p)} m wide. What is the area of the path?",
              f"The garden together with the path forms a rectangle of {L} + 2 × {num(p)} = {num(L + 2 * p)} m by {W} + 2 × {num(p)} = {num(W + 2 * p)} m, "
              f"with area {num(L + 2 * p)} × {num(W + 2 * p)} = {num(outer)} m². Subtracting the garden's {L} × {W} = {L * W} m² leaves {num(path)} m² of path.")


SCIENCE_GENERATORS = [
    ("science", sci_speed), ("science", sci_temperature), ("science", sci_free_fall), ("science", sci_acceleration),
    ("science", sci_kinetic), ("science", sci_ohm), ("science", sci_density), ("science", sci_wave), ("science", sci_gas),
    ("science", sci_molar_mass), ("science", sci_molar_mass), ("science", sci_work_power), ("science", sci_heat),
    ("science", sci_light_time), ("science", sci_units),
    ("math", math_shopping), ("math", math_discount), ("math", math_work_rate), ("math", math_ratio),
    ("math", math_trains), ("math", math_average), ("math", math_garden),
]


# ------------------------------------------------------------------- code QA
def run_python(src):
    """Execute a generated snippet and return what it prints."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(src, "<snippet>", "exec"), {"__name__": "__main__"})
    return buf.getvalue().rstrip("\n")


def code_doc(lang, language, src, out, explain):
    fence = "python" if language == "Python" else "rust"
    if lang == "zh":
        return (f"问：下面这段 {language} 程序会输出什么？\n\n```{fence}\n{src.rstrip()}\n```\n\n"
                f"答：输出为：\n\n```\n{out}\n```\n\n{explain}")
    return (f"Question: What does this {language} program print?\n\n```{fence}\n{src.rstrip()}\n```\n\n"
            f"Answer: It prints:\n\n```\n{out}\n```\n\n{explain}")


def rust_debug_vec(xs):
    """Rust's {:?} formatting of a Vec of integers."""
    return "[" + ", ".join(str(x) for x in xs) + "]"


def rust_div(a, b):
    """Rust integer division truncates toward zero."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def rust_rem(a, b):
    return a - b * rust_div(a, b)


WORDS = ["level", "rotor", "python", "rust", "radar", "kayak", "window", "banana", "stats", "garden", "noon", "compiler",
         "refer", "matrix", "civic", "tensor", "madam", "vector", "racecar", "token"]
SENTENCES = ["the quick brown fox jumps over the lazy dog", "data moves faster when it stays close to the processor",
             "a small model trains in a few minutes", "every document ends with an end of text token",
             "read the error message before changing the code", "tests should fail when the code is wrong",
             "learning rate warmup keeps early updates small", "rivers carry sediment down to the sea"]


def py_sum_squares(rng, lang):
    a = rng.randint(1, 5)
    b = rng.randint(a + 3, a + 12)
    src = f"total = 0\nfor i in range({a}, {b}):\n    total += i * i\nprint(total)\n"
    out = run_python(src)
    terms = " + ".join(f"{i}²" for i in range(a, b))
    if lang == "zh":
        ex = f"range({a}, {b}) 生成 {a} 到 {b - 1} 的整数，不包含 {b}。循环把每个数的平方累加：{terms} = {out}。"
    else:
        ex = f"range({a}, {b}) yields the integers {a} to {b - 1}; the end point {b} is excluded. The loop adds their squares: {terms} = {out}."
    return code_doc(lang, "Python", src, out, ex)


def py_filter(rng, lang):
    xs = rng.sample(range(1, 40), rng.randint(6, 9))
    k = rng.choice([2, 3, 4, 5])
    src = f"numbers = {xs}\nmultiples = [n for n in numbers if n % {k} == 0]\nprint(multiples, len(multiples))\n"
    out = run_python(src)
    if lang == "zh":
        ex = f"列表推导式按原顺序保留能被 {k} 整除（余数为 0）的元素，print 把列表和它的长度用空格隔开输出。"
    else:
        ex = f"The list comprehension keeps, in their original order, the numbers whose remainder modulo {k} is zero; print then shows the list and its length separated by a space."
    return code_doc(lang, "Python", src, out, ex)


def py_palindrome(rng, lang):
    words = rng.sample(WORDS, 3)
    src = ("def is_palindrome(word):\n    return word == word[::-1]\n\n"
           f"for w in {words}:\n    print(w, is_palindrome(w))\n")
    out = run_python(src)
    if lang == "zh":
        ex = "切片 word[::-1] 以步长 -1 取出整个字符串，得到它的逆序；与原串相等就是回文。"
    else:
        ex = "The slice word[::-1] walks the string with step -1, producing it reversed; a word equal to its reverse is a palindrome."
    return code_doc(lang, "Python", src, out, ex)


def py_vowels(rng, lang):
    s = rng.choice(SENTENCES)
    src = f'text = "{s}"\ncount = sum(1 for ch in text if ch in "aeiou")\nprint(count, len(text.split()))\n'
    out = run_python(src)
    if lang == "zh":
        ex = "生成器表达式对每个属于 \"aeiou\" 的字符计 1，sum 把它们加起来；text.split() 按空白切分，得到单词个数。"
    else:
        ex = "The generator expression yields 1 for every character found in \"aeiou\" and sum adds them up; text.split() splits on whitespace, so its length is the number of words."
    return code_doc(lang, "Python", src, out, ex)


def py_gcd(rng, lang):
    g = rng.choice([2, 3, 4, 5, 6, 7, 8, 9, 12, 15])
    a, b = g * rng.randint(3, 30), g * rng.randint(3, 30)
    src = (f"def gcd(a, b):\n    while b:\n        a, b = b, a % b\n    return a\n\n"
           f"print(gcd({a}, {b}), {a} * {b} // gcd({a}, {b}))\n")
    out = run_python(src)
    steps, x, y = [], a, b
    while y:
        steps.append(f"({x}, {y})")
        x, y = y, x % y
    steps.append(f"({x}, 0)")
    if lang == "zh":
        ex = f"欧几里得算法反复用 (b, a % b) 替换 (a, b)：{' → '.join(steps)}，所以最大公约数是 {x}。第二个数是最小公倍数 a × b ÷ gcd。"
    else:
        ex = f"Euclid's algorithm replaces (a, b) with (b, a % b) until b is zero: {' → '.join(steps)}, so the greatest common divisor is {x}. The second number is the least common multiple, a × b // gcd."
    return code_doc(lang, "Python", src, out, ex)


def py_floor_div(rng, lang):
    a = rng.choice([-17, -13, -9, -7, 7, 9, 13, 17])
    b = rng.choice([2, 3, 4, 5])
    src = f"a, b = {a}, {b}\nprint(a // b, a % b)\nprint(divmod(a, b))\n"
    out = run_python(src)
    if lang == "zh":
        ex = (f"Python 的整数除法 // 向负无穷取整，余数 % 的符号与除数相同，并且总有 a == (a // b) * b + a % b。"
              f"这里 {a} // {b} = {a // b}，{a} % {b} = {a % b}；divmod 一次返回这两个值。")
    else:
        ex = (f"Python's // rounds towards negative infinity and the remainder takes the sign of the divisor, so that a == (a // b) * b + a % b "
              f"always holds. Here {a} // {b} = {a // b} and {a} % {b} = {a % b}; divmod returns both at once.")
    return code_doc(lang, "Python", src, out, ex)


def py_letter_count(rng, lang):
    w = rng.choice(["mississippi", "bookkeeper", "banana", "committee", "assessment", "parallel", "tattoo", "successful"])
    src = (f'counts = {{}}\nfor ch in "{w}":\n    counts[ch] = counts.get(ch, 0) + 1\n'
           f"print(counts)\nprint(max(counts, key=counts.get))\n")
    out = run_python(src)
    if lang == "zh":
        ex = "dict.get(ch, 0) 在键不存在时返回 0，因此每个字母第一次出现时计数从 1 开始。字典保持插入顺序；max 以计数为键，遇到并列时返回最先出现的那个。"
    else:
        ex = "dict.get(ch, 0) returns 0 for a letter not yet seen, so each count starts at 1. Dictionaries keep insertion order, and max with key=counts.get returns the first letter with the highest count when there is a tie."
    return code_doc(lang, "Python", src, out, ex)


def py_slicing(rng, lang):
    xs = list(range(rng.randint(0, 5), rng.randint(12, 18)))
    a, b, s = rng.randint(1, 4), rng.randint(6, 10), rng.choice([2, 3])
    src = f"xs = list(range({xs[0]}, {xs[-1] + 1}))\nprint(xs[{a}:{b}])\nprint(xs[::{s}])\nprint(xs[-3:])\n"
    out = run_python(src)
    if lang == "zh":
        ex = f"xs[{a}:{b}] 取下标 {a} 到 {b - 1} 的元素；xs[::{s}] 从头开始每隔 {s} 个取一个；负下标从末尾数起，xs[-3:] 是最后三个元素。"
    else:
        ex = f"xs[{a}:{b}] takes indices {a} to {b - 1}; xs[::{s}] takes every {s}th element starting from the first; negative indices count from the end, so xs[-3:] is the last three elements."
    return code_doc(lang, "Python", src, out, ex)


def py_collatz(rng, lang):
    n = rng.randint(6, 40)
    src = (f"n, steps = {n}, 0\nwhile n != 1:\n    n = n // 2 if n % 2 == 0 else 3 * n + 1\n    steps += 1\nprint(steps)\n")
    out = run_python(src)
    seq, m = [n], n
    while m != 1:
        m = m // 2 if m % 2 == 0 else 3 * m + 1
        seq.append(m)
    shown = " → ".join(map(str, seq)) if len(seq) <= 25 else " → ".join(map(str, seq[:12])) + " → … → " + " → ".join(map(str, seq[-4:]))
    if lang == "zh":
        ex = f"这是考拉兹（3n + 1）过程：偶数除以 2，奇数乘 3 加 1。从 {n} 出发的序列是 {shown}，共 {out} 步到达 1。"
    else:
        ex = f"This is the Collatz (3n + 1) process: halve even numbers, replace odd n by 3n + 1. Starting from {n} the sequence is {shown}, which reaches 1 after {out} steps."
    return code_doc(lang, "Python", src, out, ex)


def py_binary(rng, lang):
    n = rng.randint(5, 300)
    src = f"n = {n}\nprint(bin(n), bin(n).count('1'))\nprint(int('{bin(n)[2:]}', 2) == n, n.bit_length())\n"
    out = run_python(src)
    if lang == "zh":
        ex = f"bin 返回带 0b 前缀的二进制字符串；{n} 的二进制有 {bin(n).count('1')} 个 1。int(s, 2) 把二进制字符串解析回整数；bit_length 是去掉前导零后的位数。"
    else:
        ex = f"bin returns the binary digits with a 0b prefix; {n} has {bin(n).count('1')} one-bits. int(s, 2) parses the binary string back, and bit_length is the number of digits without leading zeros."
    return code_doc(lang, "Python", src, out, ex)


def py_zip(rng, lang):
    names = rng.sample(NAMES_EN, 3)
    scores = [rng.randint(50, 99) for _ in names]
    src = (f"names = {names}\nscores = {scores}\nfor rank, (name, score) in enumerate(sorted(zip(names, scores), key=lambda p: -p[1]), start=1):\n"
           f"    print(f\"{{rank}}. {{name}} {{score}}\")\n")
    out = run_python(src)
    if lang == "zh":
        ex = "zip 把两个列表按位置配对，sorted 以分数的相反数为键，因此按分数从高到低排序；enumerate(..., start=1) 从 1 开始编号。"
    else:
        ex = "zip pairs the two lists position by position, sorting by the negated score orders the pairs from highest to lowest score, and enumerate with start=1 numbers them from 1."
    return code_doc(lang, "Python", src, out, ex)


def py_format(rng, lang):
    x = rng.choice([3.14159, 2.71828, 1.41421, 0.57722, 1.61803, 12.3456, 1234.5678])
    w = rng.choice([8, 10, 12])
    src = f'x = {x}\nprint(f"{{x:.2f}}|{{x:>{w}.3f}}|{{x:.1e}}")\nprint(f"{{int(x * 100):,}}")\n'
    out = run_python(src)
    if lang == "zh":
        ex = f".2f 保留两位小数；>{w}.3f 保留三位小数并在宽度 {w} 内右对齐，左边用空格补齐；.1e 是保留一位小数的科学计数法；逗号格式符每三位插入一个千位分隔符。"
    else:
        ex = f".2f rounds to two decimals; >{w}.3f rounds to three and right-aligns in a field {w} characters wide, padding with spaces; .1e is scientific notation with one decimal; the comma option inserts thousands separators."
    return code_doc(lang, "Python", src, out, ex)


def rs_iter_sum(rng, lang):
    xs = [rng.randint(-9, 30) for _ in range(rng.randint(5, 8))]
    k = rng.choice([2, 3])
    kept = [x * x for x in xs if x % 2 == 0]
    src = (f"fn main() {{\n    let xs = vec!{rust_debug_vec(xs)};\n"
           f"    let squares: Vec<i64> = xs.iter().filter(|&&x| x % 2 == 0).map(|&x| x * x).collect();\n"
           f"    let total: i64 = squares.iter().sum();\n    println!(\"{{:?}} {{}}\", squares, total);\n"
           f"    println!(\"{{}}\", xs.iter().filter(|&&x| x > {k}).count());\n}}\n")
    # Mirror of the Rust program: even test uses the remainder (x % 2 == 0 holds for negative evens too).
    out = f"{rust_debug_vec(kept)} {sum(kept)}\n{sum(1 for x in xs if x > k)}"
    if lang == "zh":
        ex = f"filter 保留偶数，map 把它们平方，collect 收集成 Vec；{{:?}} 以调试格式打印向量。第二行统计大于 {k} 的元素个数。"
    else:
        ex = f"filter keeps the even numbers, map squares them and collect gathers the results into a Vec, printed with the debug format {{:?}}. The second line counts the elements greater than {k}."
    return code_doc(lang, "Rust", src, out, ex)


def rs_div_rem(rng, lang):
    a = rng.choice([-17, -13, -9, -7, 7, 9, 13, 17])
    b = rng.choice([2, 3, 4, 5])
    src = (f"fn main() {{\n    let (a, b): (i32, i32) = ({a}, {b});\n    println!(\"{{}} {{}}\", a / b, a % b);\n"
           f"    println!(\"{{}} {{}}\", a.div_euclid(b), a.rem_euclid(b));\n}}\n")
    q, r = rust_div(a, b), rust_rem(a, b)
    out = f"{q} {r}\n{a // b} {a % b}"   # for b > 0, Euclidean division equals Python's floor division
    if lang == "zh":
        ex = (f"Rust 的 / 对整数向零取整，% 的符号与被除数相同，所以 {a} / {b} = {q}，{a} % {b} = {r}。"
              f"div_euclid 和 rem_euclid 给出欧几里得除法，余数总是非负：{a // b} 和 {a % b}。")
    else:
        ex = (f"Rust's integer / truncates towards zero and % takes the sign of the dividend, giving {q} and {r}. "
              f"div_euclid and rem_euclid perform Euclidean division, whose remainder is never negative: {a // b} and {a % b}.")
    return code_doc(lang, "Rust", src, out, ex)


def rs_string(rng, lang):
    w = rng.choice(WORDS)
    src = (f"fn main() {{\n    let word = \"{w}\";\n    let reversed: String = word.chars().rev().collect();\n"
           f"    println!(\"{{}} {{}} {{}}\", reversed, word.to_uppercase(), word == reversed);\n    println!(\"{{}}\", word.len());\n}}\n")
    out = f"{w[::-1]} {w.upper()} {'true' if w == w[::-1] else 'false'}\n{len(w)}"
    if lang == "zh":
        ex = "chars().rev() 逆序遍历字符，collect 组装成新的 String；to_uppercase 返回大写副本；字符串可以直接用 == 比较。len 返回的是 UTF-8 字节数，对只含 ASCII 字母的单词恰好等于字符数。"
    else:
        ex = "chars().rev() walks the characters backwards and collect builds a new String; to_uppercase returns an upper-case copy; strings compare with ==. len gives the length in UTF-8 bytes, which equals the number of characters for plain ASCII words."
    return code_doc(lang, "Rust", src, out, ex)


def rs_fizzbuzz(rng, lang):
    lo = rng.randint(1, 20)
    hi = lo + rng.randint(5, 8)
    src = (f"fn main() {{\n    let words: Vec<String> = ({lo}..={hi})\n        .map(|n| match (n % 3, n % 5) {{\n"
           f"            (0, 0) => \"FizzBuzz\".to_string(),\n            (0, _) => \"Fizz\".to_string(),\n"
           f"            (_, 0) => \"Buzz\".to_string(),\n            _ => n.to_string(),\n        }})\n        .collect();\n"
           f"    println!(\"{{}}\", words.join(\" \"));\n}}\n")
    parts = ["FizzBuzz" if n % 15 == 0 else "Fizz" if n % 3 == 0 else "Buzz" if n % 5 == 0 else str(n) for n in range(lo, hi + 1)]
    out = " ".join(parts)
    if lang == "zh":
        ex = f"{lo}..={hi} 是包含两端的区间。match 对余数二元组做模式匹配，按从上到下的顺序取第一个匹配的分支，所以 15 的倍数先匹配 (0, 0)。join 用空格把各个词连接起来。"
    else:
        ex = f"{lo}..={hi} is an inclusive range. The match on the pair of remainders takes the first arm that fits, so multiples of 15 hit (0, 0) before the single-zero arms. join puts a single space between the words."
    return code_doc(lang, "Rust", src, out, ex)


def rs_struct(rng, lang):
    w, h = rng.randint(2, 30), rng.randint(2, 30)
    s = rng.randint(2, 20)
    src = (f"struct Rect {{\n    w: u32,\n    h: u32,\n}}\n\nimpl Rect {{\n    fn area(&self) -> u32 {{\n        self.w * self.h\n    }}\n"
           f"    fn fits_in(&self, side: u32) -> bool {{\n        self.w <= side && self.h <= side\n    }}\n}}\n\n"
           f"fn main() {{\n    let r = Rect {{ w: {w}, h: {h} }};\n    println!(\"{{}} {{}}\", r.area(), r.fits_in({s}));\n}}\n")
    out = f"{w * h} {'true' if w <= s and h <= s else 'false'}"
    if lang == "zh":
        ex = f"area 返回 {w} × {h} = {w * h}；fits_in 检查两条边是否都不超过 {s}。方法用 &self 借用结构体，调用后 r 仍然可用。"
    else:
        ex = f"area returns {w} × {h} = {w * h}; fits_in checks that both sides are at most {s}. Both methods borrow the struct through &self, so r remains usable after the calls."
    return code_doc(lang, "Rust", src, out, ex)


def rs_product(rng, lang):
    n = rng.randint(5, 20)
    src = f"fn main() {{\n    let f: u64 = (1..={n}).product();\n    let digits = f.to_string().len();\n    println!(\"{{}} {{}}\", f, digits);\n}}\n"
    f = math.factorial(n)
    out = f"{f} {len(str(f))}"
    if lang == "zh":
        ex = f"(1..={n}).product() 计算 {n}! = {f}，共 {len(str(f))} 位。u64 最多能表示到 20!，21! 会溢出（调试构建中会 panic）。"
    else:
        ex = f"(1..={n}).product() computes {n}! = {f}, which has {len(str(f))} digits. A u64 holds factorials up to 20!; 21! would overflow, which panics in a debug build."
    return code_doc(lang, "Rust", src, out, ex)


def rs_position(rng, lang):
    xs = [rng.randint(1, 50) for _ in range(rng.randint(5, 8))]
    t = rng.choice([10, 25, 40, 48, 60])
    src = (f"fn main() {{\n    let xs = [{', '.join(map(str, xs))}];\n    println!(\"{{:?}}\", xs.iter().position(|&x| x > {t}));\n"
           f"    println!(\"{{:?}}\", xs.iter().max());\n}}\n")
    pos = next((i for i, x in enumerate(xs) if x > t), None)
    out = f"{'None' if pos is None else f'Some({pos})'}\nSome({max(xs)})"
    if lang == "zh":
        ex = f"position 返回第一个满足条件的元素的下标，包在 Option 里；没有元素大于 {t} 时返回 None。max 也返回 Option，因为空数组没有最大值。"
    else:
        ex = f"position returns the index of the first element that satisfies the predicate, wrapped in an Option, and None if no element exceeds {t}. max also returns an Option, since an empty array has no maximum."
    return code_doc(lang, "Rust", src, out, ex)


def rs_checked(rng, lang):
    a, b = rng.randint(100, 250), rng.randint(10, 200)
    src = (f"fn main() {{\n    let a: u8 = {a};\n    let b: u8 = {b};\n    println!(\"{{:?}}\", a.checked_add(b));\n"
           f"    println!(\"{{}}\", a.wrapping_add(b));\n    println!(\"{{}}\", a.saturating_add(b));\n}}\n")
    s = a + b
    out = f"{f'Some({s})' if s <= 255 else 'None'}\n{s % 256}\n{min(s, 255)}"
    if lang == "zh":
        ex = f"u8 的范围是 0 到 255，{a} + {b} = {s}。checked_add 溢出时返回 None，否则返回 Some；wrapping_add 按 256 取模；saturating_add 在溢出时停在最大值 255。"
    else:
        ex = f"A u8 holds 0 to 255 and {a} + {b} = {s}. checked_add returns None on overflow and Some otherwise; wrapping_add wraps modulo 256; saturating_add stops at the maximum, 255."
    return code_doc(lang, "Rust", src, out, ex)


def rs_btreemap(rng, lang):
    s = rng.choice(SENTENCES)
    words = s.split()[:rng.randint(5, 8)]
    text = " ".join(words)
    src = (f"use std::collections::BTreeMap;\n\nfn main() {{\n    let mut lengths: BTreeMap<usize, usize> = BTreeMap::new();\n"
           f"    for word in \"{text}\".split_whitespace() {{\n        *lengths.entry(word.len()).or_insert(0) += 1;\n    }}\n"
           f"    println!(\"{{:?}}\", lengths);\n}}\n")
    counts = {}
    for w in words:
        counts[len(w)] = counts.get(len(w), 0) + 1
    out = "{" + ", ".join(f"{k}: {counts[k]}" for k in sorted(counts)) + "}"
    if lang == "zh":
        ex = "程序统计每种单词长度出现的次数。entry(...).or_insert(0) 在键不存在时插入 0 并返回可变引用。BTreeMap 按键排序，所以输出顺序是确定的；HashMap 的遍历顺序则不确定。"
    else:
        ex = "The program counts how many words have each length. entry(...).or_insert(0) inserts 0 for a new key and returns a mutable reference to the count. A BTreeMap iterates in key order, so the output is deterministic, unlike a HashMap."
    return code_doc(lang, "Rust", src, out, ex)


CODE_GENERATORS = [py_sum_squares, py_filter, py_palindrome, py_vowels, py_gcd, py_floor_div, py_letter_count, py_slicing,
                   py_collatz, py_binary, py_zip, py_format, rs_iter_sum, rs_div_rem, rs_string, rs_fizzbuzz, rs_struct,
                   rs_product, rs_position, rs_checked, rs_btreemap]


# ---------------------------------------------------------------- validation
FIELDS = ("id", "lang", "topic", "text")
LANGS = ("zh", "en")
TOPICS = ("science", "history", "geography", "literature", "technology", "health", "economy", "daily_life", "math", "code")
MIN_CHARS, MAX_CHARS = 100, 1500


def validate_corpus(root):
    """Check every JSONL file under root: UTF-8, one JSON object per line with exactly the
    documented fields and values, document length within bounds, ids and texts unique."""
    problems, ids, texts, n_docs = [], {}, {}, 0
    for path in sorted(root.rglob("*.jsonl")):
        rel = path.relative_to(root)
        try:
            lines = path.read_bytes().decode("utf-8").split("\n")
        except UnicodeDecodeError as e:
            problems.append(f"{rel}: not UTF-8 ({e})")
            continue
        if lines[-1] != "":
            problems.append(f"{rel}: last line has no trailing newline")
        for line_no, line in enumerate(lines[:-1], start=1):
            where = f"{rel}:{line_no}"
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(f"{where}: invalid JSON ({e})")
                continue
            if not isinstance(doc, dict) or tuple(sorted(doc)) != tuple(sorted(FIELDS)):
                problems.append(f"{where}: fields must be exactly {FIELDS}")
                continue
            n_docs += 1
            if doc["lang"] not in LANGS:
                problems.append(f"{where}: lang {doc['lang']!r} not in {LANGS}")
            if doc["topic"] not in TOPICS:
                problems.append(f"{where}: topic {doc['topic']!r} not in {TOPICS}")
            if not MIN_CHARS <= len(doc["text"]) <= MAX_CHARS:
                problems.append(f"{where}: text has {len(doc['text'])} characters, outside {MIN_CHARS}-{MAX_CHARS}")
            for seen, key, what in ((ids, doc["id"], "id"), (texts, doc["text"], "text")):
                if key in seen:
                    problems.append(f"{where}: duplicate {what} (first at {seen[key]})")
                seen[key] = where
    return n_docs, problems


# ------------------------------------------------------------------- driver
def generate(rng, count, make, seen):
    docs = []
    attempts = 0
    while len(docs) < count:
        attempts += 1
        if attempts > count * 50:
            sys.exit(f"could not draw {count} distinct documents (got {len(docs)})")
        lang = "zh" if rng.random() < ZH_SHARE else "en"
        topic, text = make(rng, lang)
        if text in seen:
            continue
        seen.add(text)
        docs.append((lang, topic, text))
    return docs


def science_doc(rng, lang):
    topic, gen = rng.choice(SCIENCE_GENERATORS)
    return topic, gen(rng, lang)


def code_qa_doc(rng, lang):
    return "code", rng.choice(CODE_GENERATORS)(rng, lang)


def to_lines(prefix, docs):
    return [json.dumps({"id": f"{prefix}-{i:04d}", "lang": lang, "topic": topic, "text": text}, ensure_ascii=False) + "\n"
            for i, (lang, topic, text) in enumerate(docs)]


def build():
    rng = random.Random(SEED)
    seen = set()
    science = generate(rng, N_SCIENCE, science_doc, seen)
    code = generate(rng, N_CODE, code_qa_doc, seen)
    # Held-out documents come after the training draws and are distinct from them.
    val = generate(rng, N_VAL_SCIENCE, science_doc, seen) + generate(rng, N_VAL_CODE, code_qa_doc, seen)
    return {
        "synthetic/science_qa.jsonl": to_lines("synthetic-science_qa", science),
        "synthetic/code_qa.jsonl": to_lines("synthetic-code_qa", code),
        "val/synthetic.jsonl": to_lines("val-synthetic", val),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT_DIR, help="corpus root (default: corpus/sample)")
    ap.add_argument("--check", action="store_true", help="regenerate and compare with the files on disk")
    args = ap.parse_args()
    files = build()
    stale = []
    for rel, lines in files.items():
        path = args.out / rel
        content = "".join(lines)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != content:
                stale.append(rel)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        print(f"{rel}: {len(lines)} documents, {len(content.encode('utf-8'))} bytes")
    if stale:
        sys.exit(f"out of date (rerun scripts/make_synthetic_qa.py): {', '.join(stale)}")
    if args.check:
        print("synthetic files are up to date")
        n_docs, problems = validate_corpus(args.out)
        for p in problems:
            print(p, file=sys.stderr)
        if problems:
            sys.exit(f"{len(problems)} problem(s) under {args.out.name}/")
        print(f"{n_docs} documents under {args.out.name}/ are valid")


if __name__ == "__main__":
    main()
