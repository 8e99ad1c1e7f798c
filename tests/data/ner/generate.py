"""Regenerate the tiny CoNLL corpus the test NER tagger learns from (run from the repo root).

Synthetic picture-book sentences with PER/LOC tags, built from templates with a fixed seed.
The names cover those in ``tests/data/stories`` so the tiny tagger can find them.
"""

import random
from pathlib import Path

NAMES = ["Ginger", "Milo", "Luna", "Oliver", "Pip", "Rosa", "Tom", "Mia", "Leo", "Zara", "Amara", "Finn",
         "Nora", "Sam", "Kofi", "Ella", "Benny", "Hugo", "Ivy", "Tilly", "Jasper", "Poppy", "Otto", "Maya",
         "Rufus", "Daisy", "Noah", "Lily", "Arlo", "Wren", "Zoë"]
SURNAMES = ["Brown", "Green", "Moss", "Berry", "Stone", "Hill"]
PLACES = ["Africa", "London", "Paris", "Kenya", "Scotland", "Maple Wood", "River Town", "Bluebell Valley",
          "the Savanna", "Willow Lake"]
TEMPLATES = [
    "{N} walked to the river .", "{N} said hello to {M} .", "\" Come here , \" said {N} .",
    "{N} and {M} played in the garden .", "Every morning {N} ate a big breakfast .", "Then {N} laughed and laughed .",
    "{N} the giraffe had long legs .", "The little owl looked at {N} .", "{N} lived in {P} .",
    "One day {N} found a shiny stone .", "\" I am hungry , \" {N} told {M} .", "{N} climbed the tall tree .",
    "Mama hugged {N} tightly .", "{N} was a brave little mouse .", "Grandpa {N} told a story .",
    "{N} {S} visited {P} last summer .", "{N} smiled at the sun .", "Why are you sad , {N} ?",
    "{N} ran home before dark .", "The wind blew and {N} shivered .", "{N} and the bear became friends .",
    "In {P} the rain fell softly .", "{N} wore a red scarf .", "\" Look ! \" cried {N} .",
    "{M} gave {N} a blue balloon .", "{N} sang a happy song .", "Later , {N} went to sleep .",
    "Aunt {N} baked a cake for {M} .", "{N} jumped over the puddle .", "At night {N} counted the stars .",
    "The old tortoise smiled .", "A wise old owl lived in the forest .", "The little giraffe was sad .",
    "She ran to the river .", "He found a key under the bed .", "The children played all day .",
    "The king had a golden crown .", "They walked to {P} together .",
    "The fox and the hare raced across the field .", "It was a sunny day in {P} .",
]


# Words that appear once each: with min_freq=2 the tagger sees them as <unk> tagged O, so an
# unknown word is not mistaken for a name.
FILLER = """
thought moment feathers spots neck acacia umbrellas wind present grandmother warm thirsty empty
birds lions rocks sparkling swinging curly tail idea zebras elephants gazelles wrapped asleep
whispered raincoat pond boat sticks leaves bucket hole fix tighter paws tired wobbly crooked
captain floated tipped sailing frog lily politely spun mast paddled shore muddy snacks sail
cafe croissants painted lighthouse rocky storm waves purple fishing lamp boots winding stairs
dust brass handle beam safely village special penguin tummy beak cousins slide frozen bay zoomed
cliffs seals crack floated smaller alone shadow whale fountain spray rumbled thunder raft sunset
island stones flippers oars ached puffin striped breakfast melting streams currents keeper beard
woollen wooden yellow granddaughter rope dolphins leapt splashed clicking sheltered sausages snoring
lightning curled clinking glasses fog blanket slap faintly curtain slopes feast nodded mirrors
""".split()


def tagged(template: str, rng: random.Random) -> list[tuple[str, str]]:
    first, second = rng.sample(NAMES, 2)
    surname, place = rng.choice(SURNAMES), rng.choice(PLACES)
    out = []
    for word in template.split():
        if word in ("{N}", "{M}"):
            out.append((first if word == "{N}" else second, "B-PER"))
        elif word == "{S}":
            out.append((surname, "I-PER"))
        elif word == "{P}":
            inside = False
            for part in place.split():
                if part == "the":
                    out.append((part, "O"))
                else:
                    out.append((part, "I-LOC" if inside else "B-LOC"))
                    inside = True
        else:
            out.append((word, "O"))
    return out


def write(path: Path, count: int, rng: random.Random) -> None:
    lines = []
    for index in range(count):
        template = TEMPLATES[index] if index < len(TEMPLATES) else rng.choice(TEMPLATES)
        lines += [f"{word} {tag}" for word, tag in tagged(template, rng)] + [""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_filler(path: Path, rng: random.Random) -> None:
    words = FILLER[:]
    rng.shuffle(words)
    lines = []
    for start in range(0, len(words), 5):
        lines += [f"{word} O" for word in ["The", *words[start : start + 5], "."]] + [""]
    with path.open("a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    rng = random.Random(7)
    here = Path(__file__).parent
    write(here / "train.txt", 400, rng)
    write_filler(here / "train.txt", rng)
    write(here / "dev.txt", 60, rng)
    write(here / "test.txt", 60, rng)
