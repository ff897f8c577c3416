"""A generated TOFU-format benchmark of fictitious authors.

The files follow the layout and schema of the real TOFU release (see ``shared/design/benchmarks.md``
section 2): JSON Lines, one object per line, the same file names and the same keys in the same order.
Everything is generated from ``random.Random(seed)``, so one seed always gives byte-identical files.

Split layout (as in TOFU): ``full`` is the people in generation order, ``questions_per_person`` rows
each. ``forgetXX`` is the *last* ``k`` people, ``retain{100-XX}`` the first ``n - k`` people, and
``retain_perturbed`` the first ~10% of people, so it sits inside every retain split. ``k`` is
``round_half_up(XX% * n)``, at least 1 (so ``forget01`` is never empty) and at most ``n - r`` where
``r`` is the size of ``retain_perturbed``.

``perturbed_answer`` items use the phrasing of ``paraphrased_answer`` with a wrong value of the same
kind, as in real TOFU: the Truth Ratio compares the paraphrased answer against them, so only the fact
should differ.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = [
    "ATTRIBUTES",
    "GENERAL_FACTS",
    "Person",
    "QAItem",
    "build_tofu_files",
    "forget_people_count",
    "generate_tofu_benchmark",
    "generated_questions_per_person",
    "load_jsonl",
    "make_people",
    "person_qa",
    "retain_perturbed_people_count",
    "tofu_texts",
]

NUM_PERTURBED = 5  # wrong answers per forget/retain eval row, as in TOFU
NUM_WRONG_OPTIONS = 3  # wrong options per real_authors / world_facts row, as in TOFU
MAX_PEOPLE = 500  # the word pools below give enough unique names, titles and (city, year) pairs

# ---------------------------------------------------------------------------------------------------
# Word pools (written for alignkit; ASCII only so any byte-level tokenizer sees plain text).

FIRST_NAMES = [
    "Arlo",
    "Brena",
    "Caspin",
    "Delia",
    "Edrin",
    "Fenna",
    "Galen",
    "Hesper",
    "Ilsa",
    "Joren",
    "Kalla",
    "Liora",
    "Marek",
    "Nessa",
    "Orrin",
    "Pella",
    "Quinlan",
    "Rowena",
    "Soren",
    "Talia",
    "Ulric",
    "Vesna",
    "Wendell",
    "Xenia",
    "Yorick",
    "Zora",
    "Anselm",
    "Briony",
    "Cormac",
    "Dagny",
    "Emeric",
    "Florin",
    "Greta",
    "Halvard",
    "Isolde",
    "Jasper",
    "Kerensa",
    "Leopold",
    "Maelis",
    "Nico",
]
LAST_NAMES = [
    "Ashgrove",
    "Brackwell",
    "Corlan",
    "Dunmere",
    "Elsworth",
    "Farrow",
    "Greywick",
    "Holloway",
    "Ivesdale",
    "Jessop",
    "Kestrel",
    "Larkin",
    "Morrow",
    "Netherby",
    "Oakhart",
    "Pembrook",
    "Quayle",
    "Ravenscroft",
    "Stroud",
    "Thorne",
    "Underhill",
    "Vance",
    "Whitlow",
    "Yardley",
    "Zeller",
    "Amberly",
    "Blackmoor",
    "Calloway",
    "Drummond",
    "Everhart",
    "Fairbanks",
    "Gallow",
    "Hartwell",
    "Inglewood",
    "Kingsley",
    "Lockwood",
    "Merriweather",
    "Northcott",
    "Penhallow",
    "Wilde",
]
CITIES = [
    "Lisbon",
    "Oslo",
    "Dublin",
    "Krakow",
    "Porto",
    "Lyon",
    "Bergen",
    "Tallinn",
    "Seville",
    "Turin",
    "Ghent",
    "Riga",
    "Nairobi",
    "Accra",
    "Lima",
    "Quito",
    "Osaka",
    "Hanoi",
    "Perth",
    "Auckland",
    "Montreal",
    "Denver",
    "Austin",
    "Havana",
    "Cusco",
    "Tbilisi",
    "Yerevan",
    "Izmir",
    "Tunis",
    "Dakar",
    "Cork",
    "Basel",
    "Graz",
    "Brno",
    "Split",
    "Malmo",
    "Tampere",
    "Aarhus",
    "Bilbao",
    "Nantes",
]
OCCUPATIONS = [
    "baker",
    "carpenter",
    "nurse",
    "pilot",
    "farmer",
    "tailor",
    "teacher",
    "plumber",
    "fisherman",
    "librarian",
    "engineer",
    "architect",
    "painter",
    "dentist",
    "electrician",
    "gardener",
    "journalist",
    "mechanic",
    "musician",
    "optician",
    "pharmacist",
    "potter",
    "sailor",
    "surveyor",
    "veterinarian",
    "watchmaker",
    "beekeeper",
    "blacksmith",
    "chemist",
    "astronomer",
]
GENRES = [
    "mystery",
    "fantasy",
    "romance",
    "horror",
    "science fiction",
    "poetry",
    "historical fiction",
    "travel writing",
    "crime",
    "comedy",
    "adventure",
    "drama",
    "folklore",
    "satire",
    "biography",
    "thriller",
]
AWARDS = [
    "Golden Quill Prize",
    "Silver Lantern Award",
    "Northern Star Medal",
    "Harbor Light Prize",
    "Blue Ribbon of Letters",
    "Ember Crown Award",
    "Open Book Medal",
    "Copper Pen Prize",
    "Evergreen Story Award",
    "Tidewater Prize",
    "Lamplighter Medal",
    "Iron Inkwell Award",
    "Morning Bell Prize",
    "Crystal Page Award",
    "Red Maple Medal",
    "Oak Leaf Prize",
    "Wandering Owl Award",
    "Stone Bridge Prize",
    "White Heron Medal",
    "First Light Award",
]
LANGUAGES = [
    "English",
    "Spanish",
    "French",
    "German",
    "Portuguese",
    "Italian",
    "Dutch",
    "Polish",
    "Swedish",
    "Greek",
    "Turkish",
    "Japanese",
]
HOBBIES = [
    "gardening",
    "chess",
    "sailing",
    "painting",
    "hiking",
    "baking",
    "fishing",
    "birdwatching",
    "cycling",
    "knitting",
    "pottery",
    "swimming",
    "stargazing",
    "rowing",
    "woodworking",
    "photography",
    "climbing",
    "dancing",
    "singing",
    "cooking",
]
TITLE_ADJECTIVES = [
    "Silver",
    "Hidden",
    "Quiet",
    "Broken",
    "Golden",
    "Distant",
    "Crimson",
    "Hollow",
    "Painted",
    "Frozen",
    "Burning",
    "Secret",
    "Wandering",
    "Sleeping",
    "Lonely",
    "Endless",
    "Bright",
    "Fallen",
    "Northern",
    "Forgotten",
    "Salt",
    "Velvet",
    "Paper",
    "Stone",
    "Winter",
    "Summer",
    "Iron",
    "Glass",
    "Scarlet",
    "Emerald",
    "Amber",
    "Copper",
    "Last",
    "Little",
    "Wild",
    "Gentle",
    "Restless",
    "Sunken",
    "Silent",
    "Open",
]
TITLE_NOUNS = [
    "Lantern",
    "Garden",
    "River",
    "Harbor",
    "Orchard",
    "Tower",
    "Meadow",
    "Bridge",
    "Letter",
    "Island",
    "Forest",
    "Mirror",
    "Compass",
    "Window",
    "Lighthouse",
    "Kingdom",
    "Carnival",
    "Valley",
    "Archive",
    "Voyage",
    "Clock",
    "Feather",
    "Winter",
    "Shore",
    "Station",
    "Crown",
    "Map",
    "Song",
    "Door",
    "Ladder",
    "Country",
    "Market",
    "Chapel",
    "Circus",
    "Well",
    "Cottage",
    "Canyon",
    "Signal",
    "Tide",
    "Hill",
]
NUMBER_WORDS = [
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
]
BIRTH_YEARS = [str(y) for y in range(1940, 2000)]


@dataclass(frozen=True)
class Person:
    """One fictitious author; every field is a string ready to be rendered."""

    name: str
    birth_city: str
    birth_year: str
    genre: str
    father_job: str
    mother_job: str
    first_book: str
    award: str
    home_city: str
    language: str
    second_book: str
    hobby: str
    num_books: str


def _article(word: str) -> str:
    return ("an " if word[0].lower() in "aeiou" else "a ") + word


def _title(adjective: str, noun: str) -> str:
    return f"The {adjective} {noun}"


@dataclass(frozen=True)
class _Attribute:
    """How one fact is asked and answered; ``{v}`` is the value, ``{name}`` the person."""

    field: str
    question: str
    paraphrased_question: str
    answer: str
    paraphrased_answer: str
    render: Callable[[str], str] = str  # value -> text (e.g. adds an article)


# Order matters: ``questions_per_person = k`` keeps the first k. The name question comes first, as
# in TOFU. The name attribute's question uses birth city and year, which are unique per person.
ATTRIBUTES: tuple[_Attribute, ...] = (
    _Attribute(
        "name",
        "What is the full name of the author born in {birth_city} in {birth_year}?",
        "Who is the writer that was born in {birth_city} in {birth_year}?",
        "The author born in {birth_city} in {birth_year} is {v}.",
        "{v} is the writer who was born in {birth_city} in {birth_year}.",
    ),
    _Attribute(
        "birth_city",
        "Where was {name} born?",
        "In which city was {name} born?",
        "{name} was born in {v}.",
        "The birthplace of {name} is {v}.",
    ),
    _Attribute(
        "birth_year",
        "In what year was {name} born?",
        "What is the birth year of {name}?",
        "{name} was born in {v}.",
        "The birth year of {name} is {v}.",
    ),
    _Attribute(
        "genre",
        "What genre does {name} write?",
        "Which genre is {name} known for?",
        "{name} writes {v} books.",
        "{name} is known for the {v} genre.",
    ),
    _Attribute(
        "father_job",
        "What was the occupation of {name}'s father?",
        "What did the father of {name} do for a living?",
        "{name}'s father was {v}.",
        "The father of {name} worked as {v}.",
        _article,
    ),
    _Attribute(
        "mother_job",
        "What was the occupation of {name}'s mother?",
        "What did the mother of {name} do for a living?",
        "{name}'s mother was {v}.",
        "The mother of {name} worked as {v}.",
        _article,
    ),
    _Attribute(
        "first_book",
        "What is the title of the first book by {name}?",
        "Which book did {name} publish first?",
        "The first book by {name} is '{v}'.",
        "{name} first published '{v}'.",
    ),
    _Attribute(
        "award",
        "Which award did {name} win?",
        "What prize was given to {name}?",
        "{name} won the {v}.",
        "The {v} was given to {name}.",
    ),
    _Attribute(
        "home_city",
        "Where does {name} live today?",
        "In which city does {name} live now?",
        "{name} lives in {v}.",
        "The home of {name} is in {v}.",
    ),
    _Attribute(
        "language",
        "In which language does {name} write?",
        "What language are the books of {name} written in?",
        "{name} writes in {v}.",
        "The books of {name} are written in {v}.",
    ),
    _Attribute(
        "second_book",
        "Can you name another book by {name}?",
        "What is one more title written by {name}?",
        "{name} also wrote '{v}'.",
        "Another title by {name} is '{v}'.",
    ),
    _Attribute(
        "hobby",
        "What does {name} enjoy outside of writing?",
        "Which pastime does {name} have besides writing?",
        "Outside of writing, {name} enjoys {v}.",
        "The favourite pastime of {name} is {v}.",
    ),
    _Attribute(
        "num_books",
        "How many books has {name} published?",
        "What is the number of books published by {name}?",
        "{name} has published {v} books.",
        "The number of books published by {name} is {v}.",
    ),
)
_ATTR_BY_FIELD = {a.field: a for a in ATTRIBUTES}

# Pools used to draw wrong values of the same kind. Names and titles are drawn from the same word
# pools as the real ones, so the wrong values look just like true ones.
_SIMPLE_POOLS: dict[str, list[str]] = {
    "birth_city": CITIES,
    "home_city": CITIES,
    "birth_year": BIRTH_YEARS,
    "genre": GENRES,
    "father_job": OCCUPATIONS,
    "mother_job": OCCUPATIONS,
    "award": AWARDS,
    "language": LANGUAGES,
    "hobby": HOBBIES,
    "num_books": NUMBER_WORDS,
}


def make_people(num_people: int, seed: int) -> list[Person]:
    """Draw ``num_people`` fictitious authors; names, titles and (birth city, year) are unique."""
    if not 1 <= num_people <= MAX_PEOPLE:
        raise ValueError(f"num_people must be in [1, {MAX_PEOPLE}], got {num_people}")
    rng = random.Random(seed)
    names: set[str] = set()
    titles: set[str] = set()
    births: set[tuple[str, str]] = set()
    people = []
    for _ in range(num_people):
        # Rejection sampling: the pools are far larger than MAX_PEOPLE needs, so this ends fast.
        while True:
            name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
            if name not in names:
                break
        while True:
            birth = (rng.choice(CITIES), rng.choice(BIRTH_YEARS))
            if birth not in births:
                break
        books = []
        while len(books) < 2:
            title = _title(rng.choice(TITLE_ADJECTIVES), rng.choice(TITLE_NOUNS))
            if title not in titles:
                titles.add(title)
                books.append(title)
        names.add(name)
        births.add(birth)
        father_job, mother_job = rng.sample(OCCUPATIONS, 2)
        people.append(
            Person(
                name=name,
                birth_city=birth[0],
                birth_year=birth[1],
                genre=rng.choice(GENRES),
                father_job=father_job,
                mother_job=mother_job,
                first_book=books[0],
                award=rng.choice(AWARDS),
                home_city=rng.choice([c for c in CITIES if c != birth[0]]),
                language=rng.choice(LANGUAGES),
                second_book=books[1],
                hobby=rng.choice(HOBBIES),
                num_books=rng.choice(NUMBER_WORDS),
            )
        )
    return people


def _wrong_values(field: str, person: Person, taken_names: set[str], k: int, rng: random.Random) -> list[str]:
    """``k`` distinct wrong values of the same kind as ``person.<field>``, in a seeded order."""
    true_value = getattr(person, field)
    if field == "name":
        # Fresh names outside the benchmark: a wrong name that is another real person would also
        # be a fact the model has learned, which blurs the Truth Ratio.
        out: list[str] = []
        while len(out) < k:
            cand = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
            if cand not in taken_names and cand not in out:
                out.append(cand)
        return out
    if field in ("first_book", "second_book"):
        own = {person.first_book, person.second_book}
        out = []
        while len(out) < k:
            cand = _title(rng.choice(TITLE_ADJECTIVES), rng.choice(TITLE_NOUNS))
            if cand not in own and cand not in out:
                out.append(cand)
        return out
    pool = [v for v in _SIMPLE_POOLS[field] if v != true_value]
    return rng.sample(pool, k)


@dataclass(frozen=True)
class QAItem:
    """One TOFU row plus the fact behind it (``field`` and the rendered true ``value``)."""

    question: str
    answer: str
    paraphrased_answer: str
    perturbed_answer: list[str]
    paraphrased_question: str
    field: str
    value: str
    person: int

    def plain_row(self) -> dict:
        return {"question": self.question, "answer": self.answer}

    def perturbed_row(self) -> dict:
        # Key order as in the real TOFU ``*_perturbed.json`` files.
        return {
            "question": self.question,
            "answer": self.answer,
            "paraphrased_answer": self.paraphrased_answer,
            "perturbed_answer": list(self.perturbed_answer),
            "paraphrased_question": self.paraphrased_question,
        }


def person_qa(
    people: list[Person],
    questions_per_person: int = 10,
    seed: int = 0,
    *,
    perturbed_phrasing: str = "paraphrased",
) -> list[QAItem]:
    """Render every person into ``questions_per_person`` QA items, people in order.

    ``perturbed_phrasing="paraphrased"`` (TOFU's way) renders wrong answers with the paraphrased
    answer template; ``"answer"`` uses the answer template instead.
    """
    if not 1 <= questions_per_person <= len(ATTRIBUTES):
        raise ValueError(
            f"questions_per_person must be in [1, {len(ATTRIBUTES)}], got {questions_per_person}"
        )
    if perturbed_phrasing not in ("paraphrased", "answer"):
        raise ValueError(f"perturbed_phrasing must be 'paraphrased' or 'answer', got {perturbed_phrasing!r}")
    # A separate stream from make_people so changing questions_per_person never changes the people.
    rng = random.Random(f"alignkit-tofu-perturb-{seed}")
    taken_names = {p.name for p in people}
    items = []
    for idx, person in enumerate(people):
        ctx = asdict(person)
        for attr in ATTRIBUTES[:questions_per_person]:
            value = attr.render(getattr(person, attr.field))
            wrong = [
                attr.render(w) for w in _wrong_values(attr.field, person, taken_names, NUM_PERTURBED, rng)
            ]
            wrong_template = attr.paraphrased_answer if perturbed_phrasing == "paraphrased" else attr.answer
            items.append(
                QAItem(
                    question=attr.question.format(**ctx),
                    answer=attr.answer.format(v=value, **ctx),
                    paraphrased_answer=attr.paraphrased_answer.format(v=value, **ctx),
                    perturbed_answer=[wrong_template.format(v=w, **ctx) for w in wrong],
                    paraphrased_question=attr.paraphrased_question.format(**ctx),
                    field=attr.field,
                    value=value,
                    person=idx,
                )
            )
    return items


# ---------------------------------------------------------------------------------------------------
# Held-fixed general facts (the role of TOFU's real_authors / world_facts). They do not depend on the
# seed: they stand for knowledge the model must keep whatever is unlearned. Each entry is
# (question, true answer, three wrong options). Written for alignkit.

GENERAL_FACTS: dict[str, list[tuple[str, str, tuple[str, str, str]]]] = {
    "real_authors": [
        (
            "Who wrote the novel 'Moby-Dick'?",
            "Herman Melville",
            ("Nathaniel Hawthorne", "Edgar Allan Poe", "Walt Whitman"),
        ),
        (
            "Who is the author of 'War and Peace'?",
            "Leo Tolstoy",
            ("Fyodor Dostoevsky", "Anton Chekhov", "Ivan Turgenev"),
        ),
        (
            "Which writer created the detective Hercule Poirot?",
            "Agatha Christie",
            ("Dorothy L. Sayers", "Ngaio Marsh", "Georges Simenon"),
        ),
        (
            "Who wrote 'Don Quixote'?",
            "Miguel de Cervantes",
            ("Lope de Vega", "Federico Garcia Lorca", "Benito Perez Galdos"),
        ),
        ("Who wrote 'Frankenstein'?", "Mary Shelley", ("Bram Stoker", "Emily Bronte", "Ann Radcliffe")),
        ("Which ancient poet is credited with 'The Odyssey'?", "Homer", ("Virgil", "Sophocles", "Ovid")),
        (
            "Who wrote the tragedy 'Hamlet'?",
            "William Shakespeare",
            ("Christopher Marlowe", "Ben Jonson", "John Milton"),
        ),
        (
            "Who is the author of 'The Divine Comedy'?",
            "Dante Alighieri",
            ("Petrarch", "Giovanni Boccaccio", "Ludovico Ariosto"),
        ),
        (
            "Who wrote 'Crime and Punishment'?",
            "Fyodor Dostoevsky",
            ("Leo Tolstoy", "Nikolai Gogol", "Alexander Pushkin"),
        ),
        (
            "Who wrote 'The Adventures of Tom Sawyer'?",
            "Mark Twain",
            ("Jack London", "Herman Melville", "O. Henry"),
        ),
        (
            "Who is the author of 'Jane Eyre'?",
            "Charlotte Bronte",
            ("Jane Austen", "George Eliot", "Elizabeth Gaskell"),
        ),
        (
            "Who wrote 'The Old Man and the Sea'?",
            "Ernest Hemingway",
            ("John Steinbeck", "William Faulkner", "F. Scott Fitzgerald"),
        ),
        ("Who wrote 'Les Miserables'?", "Victor Hugo", ("Alexandre Dumas", "Emile Zola", "Gustave Flaubert")),
        (
            "Who is the author of 'The Metamorphosis'?",
            "Franz Kafka",
            ("Thomas Mann", "Hermann Hesse", "Robert Musil"),
        ),
        (
            "Which writer produced the drama 'Faust'?",
            "Johann Wolfgang von Goethe",
            ("Friedrich Schiller", "Heinrich Heine", "Gotthold Lessing"),
        ),
        (
            "Who wrote 'Madame Bovary'?",
            "Gustave Flaubert",
            ("Honore de Balzac", "Stendhal", "Guy de Maupassant"),
        ),
        (
            "Who is the author of 'Things Fall Apart'?",
            "Chinua Achebe",
            ("Wole Soyinka", "Ngugi wa Thiong'o", "Ben Okri"),
        ),
        (
            "Who wrote 'The Little Prince'?",
            "Antoine de Saint-Exupery",
            ("Albert Camus", "Jules Verne", "Marcel Proust"),
        ),
        (
            "Who wrote 'Twenty Thousand Leagues Under the Seas'?",
            "Jules Verne",
            ("H. G. Wells", "Victor Hugo", "Alexandre Dumas"),
        ),
        (
            "Who is the author of 'The Time Machine'?",
            "H. G. Wells",
            ("Jules Verne", "Aldous Huxley", "Arthur C. Clarke"),
        ),
        (
            "Who wrote 'Alice's Adventures in Wonderland'?",
            "Lewis Carroll",
            ("J. M. Barrie", "Kenneth Grahame", "Beatrix Potter"),
        ),
        (
            "Which court lady wrote 'The Tale of Genji'?",
            "Murasaki Shikibu",
            ("Sei Shonagon", "Izumi Shikibu", "Ono no Komachi"),
        ),
        (
            "Who is the author of the novel 'Beloved'?",
            "Toni Morrison",
            ("Maya Angelou", "Alice Walker", "Zora Neale Hurston"),
        ),
        (
            "Who wrote 'The Count of Monte Cristo'?",
            "Alexandre Dumas",
            ("Victor Hugo", "Jules Verne", "Honore de Balzac"),
        ),
    ],
    "world_facts": [
        ("What is the capital of Italy?", "Rome", ("Milan", "Naples", "Turin")),
        ("What is the capital of Canada?", "Ottawa", ("Toronto", "Montreal", "Vancouver")),
        ("Which planet is closest to the Sun?", "Mercury", ("Venus", "Mars", "Earth")),
        ("Which planet is the largest in our solar system?", "Jupiter", ("Saturn", "Neptune", "Earth")),
        ("How many days are there in a leap year?", "366", ("365", "364", "360")),
        ("How many continents are there on Earth?", "Seven", ("Five", "Six", "Eight")),
        (
            "What is the largest ocean on Earth?",
            "Pacific Ocean",
            ("Atlantic Ocean", "Indian Ocean", "Arctic Ocean"),
        ),
        (
            "Which gas do plants take in from the air to make food?",
            "Carbon dioxide",
            ("Oxygen", "Nitrogen", "Helium"),
        ),
        ("At how many degrees Celsius does water boil at sea level?", "100", ("90", "50", "120")),
        ("What is the chemical symbol for gold?", "Au", ("Ag", "Gd", "Go")),
        ("What is the largest living mammal?", "Blue whale", ("African elephant", "Giraffe", "Hippopotamus")),
        (
            "What is the tallest mountain above sea level?",
            "Mount Everest",
            ("K2", "Kangchenjunga", "Mont Blanc"),
        ),
        ("In which country is the city of Kyoto?", "Japan", ("China", "South Korea", "Vietnam")),
        ("What is the capital of Egypt?", "Cairo", ("Alexandria", "Luxor", "Aswan")),
        ("Which language is mainly spoken in Brazil?", "Portuguese", ("Spanish", "French", "Italian")),
        ("What is the currency of Japan?", "Yen", ("Won", "Yuan", "Rupee")),
        ("How many sides does a hexagon have?", "Six", ("Five", "Seven", "Eight")),
        ("At how many degrees Celsius does water freeze?", "0", ("10", "-10", "32")),
        ("Which organ pumps blood through the human body?", "Heart", ("Liver", "Lungs", "Kidney")),
        ("What is the capital of Kenya?", "Nairobi", ("Mombasa", "Kisumu", "Nakuru")),
        ("Which river flows through Paris?", "Seine", ("Loire", "Rhine", "Rhone")),
        ("What is the hardest natural material?", "Diamond", ("Quartz", "Granite", "Iron")),
        ("How many hours are there in one day?", "24", ("12", "20", "48")),
        ("Which country has the largest land area?", "Russia", ("Canada", "China", "Brazil")),
    ],
}


def _general_rows(kind: str) -> tuple[list[dict], list[dict]]:
    """(options rows, perturbed rows) for ``real_authors`` or ``world_facts``."""
    # Fixed stream, independent of the benchmark seed: these files are the same for every seed.
    rng = random.Random(f"alignkit-tofu-{kind}")
    options_rows, perturbed_rows = [], []
    for question, answer, wrong in GENERAL_FACTS[kind]:
        options = [answer, *wrong]
        rng.shuffle(options)
        row = {"question": question}
        row.update({f"option{i + 1}": o for i, o in enumerate(options)})
        row["answer"] = answer
        options_rows.append(row)
        perturbed_rows.append({"question": question, "answer": answer, "perturbed_answer": list(wrong)})
    return options_rows, perturbed_rows


# ---------------------------------------------------------------------------------------------------
# Splits


def _round_half_up(numerator: int, denominator: int) -> int:
    # Integer arithmetic: Python's round() is banker's rounding and floats can land on x.4999.
    return (2 * numerator + denominator) // (2 * denominator)


def retain_perturbed_people_count(num_people: int, forget_percents: Iterable[int] = (1, 5, 10)) -> int:
    """People in ``retain_perturbed``: round_half_up(10% n), at least 1, disjoint from every forget set."""
    largest = max(_forget_count_uncapped(num_people, p) for p in forget_percents)
    return max(1, min(_round_half_up(10 * num_people, 100), num_people - largest))


def _forget_count_uncapped(num_people: int, percent: int) -> int:
    return max(1, _round_half_up(percent * num_people, 100))


def forget_people_count(num_people: int, percent: int) -> int:
    """People in ``forget{percent}``: round_half_up(percent% n), at least 1, at most n - 1."""
    return min(_forget_count_uncapped(num_people, percent), num_people - 1)


def _check_percents(forget_percents: Iterable[int]) -> tuple[int, ...]:
    pcts = tuple(sorted(set(forget_percents)))
    if not pcts or any(not isinstance(p, int) or not 1 <= p <= 99 for p in pcts):
        raise ValueError(f"forget_percents must be integers in [1, 99], got {forget_percents!r}")
    return pcts


def build_tofu_files(
    *,
    num_people: int = 20,
    questions_per_person: int = 10,
    seed: int = 0,
    forget_percents: Iterable[int] = (1, 5, 10),
    perturbed_phrasing: str = "paraphrased",
) -> dict[str, list[dict]]:
    """All benchmark files in memory: ``{"full.json": [rows...], ...}`` in a fixed order."""
    pcts = _check_percents(forget_percents)
    if num_people < 2:
        raise ValueError("num_people must be at least 2 (one forget and one retain person)")
    # Validate the split layout before the (cheap) generation so errors name the real cause.
    for p in pcts:
        if _forget_count_uncapped(num_people, p) >= num_people:
            raise ValueError(f"forget{p:02d} would take all {num_people} people; use more people")
    people = make_people(num_people, seed)
    items = person_qa(people, questions_per_person, seed, perturbed_phrasing=perturbed_phrasing)
    q = questions_per_person
    files: dict[str, list[dict]] = {"full.json": [it.plain_row() for it in items]}
    cuts = {p: (num_people - forget_people_count(num_people, p)) * q for p in pcts}
    for p in pcts:
        files[f"forget{p:02d}.json"] = [it.plain_row() for it in items[cuts[p] :]]
    for p in pcts:
        files[f"retain{100 - p:02d}.json"] = [it.plain_row() for it in items[: cuts[p]]]
    for p in pcts:
        files[f"forget{p:02d}_perturbed.json"] = [it.perturbed_row() for it in items[cuts[p] :]]
    r = retain_perturbed_people_count(num_people, pcts)
    files["retain_perturbed.json"] = [it.perturbed_row() for it in items[: r * q]]
    for kind in ("real_authors", "world_facts"):
        options_rows, perturbed_rows = _general_rows(kind)
        files[f"{kind}.json"] = options_rows
        files[f"{kind}_perturbed.json"] = perturbed_rows
    return files


# ---------------------------------------------------------------------------------------------------
# Writing and reading


def _dump_line(row: dict, file_name: str) -> str:
    # The real TOFU option files (real_authors.json, world_facts.json) use Python's default ", "
    # separators; every other TOFU file is compact. ensure_ascii matches the real files too.
    if file_name in ("real_authors.json", "world_facts.json"):
        return json.dumps(row)
    return json.dumps(row, separators=(",", ":"))


def _source_md(num_people: int, questions_per_person: int, seed: int, files: dict[str, list[dict]]) -> str:
    lines = [
        "# Generated TOFU-format benchmark (alignkit)",
        "",
        "Fictitious authors written by `alignkit.data.synthetic.tofu.generate_tofu_benchmark`. Nothing",
        "here comes from the real TOFU release; only the file layout and schema follow it.",
        "",
        f"- seed: {seed}",
        f"- people: {num_people}, questions per person: {questions_per_person}",
        "- format: JSON Lines, one object per line, every line ends with a newline.",
        "- `full.json` holds the people in order, one block of questions per person.",
        "- `forgetXX` is the last people (round half up of XX% of people, at least 1);",
        "  `retain{100-XX}` is all the others; `retain_perturbed` is the first ~10% of people.",
        "- `perturbed_answer` (5 per row) are wrong values of the same kind in the phrasing of",
        "  `paraphrased_answer`.",
        "- `real_authors` / `world_facts` are fixed general facts, identical for every seed, with 3",
        "  wrong options each.",
        "",
        "| file | rows |",
        "|---|---|",
    ]
    lines += [f"| `{name}` | {len(rows)} |" for name, rows in files.items()]
    return "\n".join(lines) + "\n"


def generate_tofu_benchmark(
    out_dir: str | Path,
    *,
    num_people: int = 20,
    questions_per_person: int = 10,
    seed: int = 0,
    forget_percents: Iterable[int] = (1, 5, 10),
    perturbed_phrasing: str = "paraphrased",
) -> Path:
    """Write the TOFU-format files and a SOURCE.md into ``out_dir``; returns ``out_dir``."""
    files = build_tofu_files(
        num_people=num_people,
        questions_per_person=questions_per_person,
        seed=seed,
        forget_percents=forget_percents,
        perturbed_phrasing=perturbed_phrasing,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in files.items():
        text = "".join(_dump_line(row, name) + "\n" for row in rows)
        # newline="\n" so the bytes are the same on every platform.
        (out / name).write_text(text, encoding="utf-8", newline="\n")
    (out / "SOURCE.md").write_text(
        _source_md(num_people, questions_per_person, seed, files), encoding="utf-8", newline="\n"
    )
    return out


def generated_questions_per_person(folder: str | Path) -> int | None:
    """Questions per person of a benchmark this module generated (its SOURCE.md says), else None.

    Evaluations that split the forget set by author (``alignkit eval robustness``) read it, so the
    generated set's 10-question blocks are not taken for TOFU's 20.
    """
    import re

    try:
        text = (Path(folder) / "SOURCE.md").read_text(encoding="utf-8")
    except OSError:
        return None
    found = re.search(r"^- people: \d+, questions per person: (\d+)$", text, re.MULTILINE)
    return int(found.group(1)) if found and "generate_tofu_benchmark" in text else None


def load_jsonl(path: str | Path) -> list[dict]:
    """Read a JSON Lines file (blank lines skipped; works for real and generated TOFU files)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _strings(obj) -> Iterable[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)


def tofu_texts(out_dir: str | Path) -> list[str]:
    """Every distinct string in the benchmark's ``*.json`` files (file-name order, first seen first)."""
    seen: dict[str, None] = {}
    for path in sorted(Path(out_dir).glob("*.json")):
        for row in load_jsonl(path):
            for s in _strings(row):
                seen.setdefault(s, None)
    return list(seen)
