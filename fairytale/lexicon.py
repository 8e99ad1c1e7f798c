"""Words picture books use for their characters, for finding unnamed ones ("the little giraffe").

A noun phrase whose head is one of these nouns is a character candidate; the NLI model still
confirms it. Nouns outside the list become candidates only when the text makes them speak or act
(``said the frog``) and the NLI model agrees they are a living being.
"""

from __future__ import annotations

ANIMALS = frozenset(
    """
    aardvark alligator ant antelope ape armadillo baboon badger bat bear beaver bee beetle bird
    bison boar buffalo bull bulldog bunny butterfly calf camel canary cat caterpillar cheetah chick
    chicken chimpanzee chipmunk cockerel cougar cow coyote crab crane crocodile crow cub cuckoo deer
    dinosaur dog dolphin donkey dove dragonfly duck duckling eagle eel elephant elk emu falcon fawn
    ferret finch firefly fish flamingo fly foal fox frog gazelle gecko gerbil gibbon giraffe goat
    goose gorilla grasshopper guinea hamster hare hawk hedgehog hen heron hippo hippopotamus horse
    hound hummingbird hyena iguana jackal jaguar jellyfish kangaroo kitten kitty koala ladybird
    ladybug lamb lark lemur leopard lion lioness lizard llama lobster lynx macaw magpie mare meerkat
    mole monkey moose mosquito moth mouse mule narwhal newt nightingale octopus orangutan ostrich
    otter owl owlet ox panda panther parrot peacock pelican penguin pig piglet pigeon pony poodle
    porcupine possum puffin pup puppy python rabbit raccoon ram rat raven reindeer rhino
    rhinoceros robin rooster salamander seagull seahorse seal shark sheep shrew skunk sloth slug
    snail snake sparrow spider squirrel stag starfish stork swallow swan tadpole tiger toad
    tortoise toucan turkey turtle unicorn vole vulture walrus wasp weasel whale wolf wombat
    woodpecker worm yak zebra
    """.split()
)

PEOPLE = frozenset(
    """
    aunt baby baker boy brother captain chef child daughter doctor driver farmer father
    fisherman friend gardener girl grandad granddad grandfather grandma grandmother grandpa granny
    guard hunter keeper king knight lady lord man mayor miller mother mum mummy nanny neighbour
    neighbor nurse pirate police policeman prince princess queen sailor shepherd sister soldier son
    teacher uncle woman robber thief bandit
    """.split()
)

CREATURES = frozenset(
    """
    dragon elf fairy ghost giant gnome goblin mermaid monster ogre pixie robot troll witch wizard
    dwarf genie sprite yeti
    """.split()
)

CHARACTER_NOUNS = ANIMALS | PEOPLE | CREATURES

FEMALE_NOUNS = frozenset(
    """aunt daughter girl grandma grandmother granny hen lady lioness mare mother mum mummy nanny
    princess queen sister witch woman mermaid fairy""".split()
)
MALE_NOUNS = frozenset(
    """boy brother bull father fisherman grandad granddad grandfather grandpa king lord man
    policeman prince ram rooster son stag uncle wizard""".split()
)

#: Words that make someone a speaker or actor: "said the frog", "the frog said".
SPEECH_VERBS = frozenset(
    """said asked cried shouted whispered replied answered called laughed sang yelled told
    squeaked growled roared croaked hooted barked chirped sighed grumbled rumbled""".split()
)

#: Words that open a plural character phrase: "the three bears", "two little mice", "both boys".
GROUP_OPENERS = frozenset("the these those two three four five six seven eight nine ten twelve both".split())

DETERMINERS = ("the", "a", "an", "this", "that", "his", "her", "their", "our", "my", "your", "its")

#: Words that end a noun phrase: they are never a modifier of the head noun.
PHRASE_STOPWORDS = frozenset(
    """and or but with without to of in on at by for from into onto over under was were is are
    had has have did do does not no very said asked who which that then than as so too""".split()
)

PRONOUNS = {
    "she": "female", "her": "female", "hers": "female", "herself": "female",
    "he": "male", "him": "male", "his": "male", "himself": "male",
    "it": "neutral", "its": "neutral", "itself": "neutral",
    "they": "group", "them": "group", "their": "group", "themselves": "group",
}  # fmt: skip


def singular(word: str) -> str:
    """A plural character noun in singular form, else the word unchanged ("owls" → "owl")."""
    word = word.lower()
    if word in CHARACTER_NOUNS:
        return word
    for suffix, replacement in (("ies", "y"), ("es", ""), ("s", "")):
        if word.endswith(suffix) and word[: -len(suffix)] + replacement in CHARACTER_NOUNS:
            return word[: -len(suffix)] + replacement
    irregular = {
        "mice": "mouse", "geese": "goose", "children": "child", "men": "man", "women": "woman", "wolves": "wolf",
        "thieves": "thief", "elves": "elf", "dwarves": "dwarf", "sheep": "sheep", "fish": "fish", "calves": "calf",
    }  # fmt: skip
    return irregular.get(word, word)

#: Words that say when something happens. A page without one keeps the previous time of day.
TIME_CUES = frozenset(
    """morning dawn sunrise breakfast noon midday afternoon lunch lunchtime daytime evening sunset
    dusk twilight dinner supper night nights midnight tonight moonlight bedtime""".split()
)

#: Words that carry feeling. A page without one keeps the previous mood.
MOOD_CUES = frozenset(
    """happy happily glad joy joyful laughed laugh laughing smiled smile smiling giggled cheered
    hooray excited exciting fun funny sad sadly unhappy cried cry crying tear tears sobbed lonely
    alone lost afraid scared frightened fear worried nervous angry cross grumpy upset brave proud
    calm quiet peaceful sleepy tired surprised amazed hoped wished shivered trembled danger storm
    thunder hugged loved love kind friends feast sang song played""".split()
)

#: Words that must not reach an illustration prompt from the story's own words: fairy tales are
#: grim ("cut open the wolf's belly"), and the safety checker only catches nudity. An answer
#: read from the text that holds one of these is not used; the plan stays editable by hand.
UNSUITABLE_FOR_PICTURES = frozenset(
    """
    blood bloody bleeding bled gore gory guts corpse corpses murder murdered murderer
    murders kill killed killing kills slaughter slaughtered stab stabbed stabbing behead beheaded
    decapitated strangled hanged suicide torture tortured dismembered wounded gun guns
    rifle pistol shotgun bullet bullets knife knives naked nude nudity sex sexy
    """.split()
)

#: …and phrases, matched in lower case.
UNSUITABLE_PHRASES = ("cut open", "cut off his head", "cut off her head", "dead body", "chopped off")
