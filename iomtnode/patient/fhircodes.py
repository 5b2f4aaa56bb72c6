"""The code systems, codes and units of the FHIR export (docs/privacy.md, section 6), and the
check of an Observation against them, in one place so the builder and the check read the same
table.

Sources: LOINC codes as the FHIR R4 vital signs profiles use them
(http://hl7.org/fhir/R4/observation-vitalsigns.html); IEEE 11073-10101 nomenclature codes
(``urn:iso:std:iso:11073:10101``; each code is partition * 2**16 + term code, e.g.
MDC_PULS_OXIM_SAT_O2 = 2 * 65536 + 19384 = 150456) as listed in the Rosetta Terminology
Mapping; UCUM units (http://unitsofmeasure.org); the other systems are HL7 terminology.
"""

from __future__ import annotations

from dataclasses import dataclass

from iomtnode.patient import plaintext as pt

LOINC = "http://loinc.org"
MDC = "urn:iso:std:iso:11073:10101"
UCUM = "http://unitsofmeasure.org"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
CONSENT_ACTION = "http://terminology.hl7.org/CodeSystem/consentaction"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
PARTICIPATION_TYPE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
AUDIT_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL_INTERACTION = "http://hl7.org/fhir/restful-interaction"
SIGNATURE_TYPE = "urn:iso-astm:E1762-95:2013"  # the ValueSet "Signature Type Codes"
PROVENANCE_AGENT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"

# Identifier systems: the keys and ids of the ledger, which is all the export knows of anyone.
STREAM_SYSTEM = "urn:iomt:stream"
DEVICE_SYSTEM = "urn:iomt:device"
KEY_SYSTEM = "urn:iomt:key"
NODE_SYSTEM = "urn:iomt:node"
TX_SYSTEM = "urn:iomt:tx"
METHOD_SYSTEM = "urn:iomt:api-method"  # the JSON-RPC method an audit record names
# Extensions: what FHIR has no element for.
SIGNED_BODY_URL = "urn:iomt:fhir:signed-body"  # valueBase64Binary: the body the signature covers
BLOCK_URL = "urn:iomt:fhir:block"  # sub-extensions height (valueUnsignedInt) and hash (hex)
GRANT_MODE_URL = "urn:iomt:fhir:grant-mode"  # valueCode forward | history
SIG_FORMAT = "application/iomt-ed25519"

# Author's Signature: the device is the sole author of the reading it signs (Verification
# Signature, .5, is a second party attesting a document it did not write).
AUTHORS_SIGNATURE = ("1.2.840.10065.1.12.1.1", "Author's Signature")
SERVED_OUTCOME, REFUSED_OUTCOME = "0", "4"  # AuditEvent.outcome: success, minor failure
GRANT_MODES = {0: "forward", 1: "history"}


@dataclass(frozen=True)
class Code:
    system: str
    code: str
    display: str

    def coding(self) -> dict:
        return {"system": self.system, "code": self.code, "display": self.display}


@dataclass(frozen=True)
class Unit:
    code: str  # UCUM
    display: str

    def quantity(self, value: int | float) -> dict:
        return {"value": value, "unit": self.display, "system": UCUM, "code": self.code}


PER_MIN = Unit("/min", "beats/minute")
PERCENT = Unit("%", "%")
CELSIUS = Unit("Cel", "C")
MM_HG = Unit("mm[Hg]", "mmHg")
MICROVOLT = Unit("uV", "microvolt")

VITAL_SIGNS = Code(OBSERVATION_CATEGORY, "vital-signs", "Vital Signs")
# An ECG strip is not one of the vital signs (whose profile would require a vital-sign LOINC
# code); "procedure" covers electrodiagnostics (observation-category's definition).
PROCEDURE = Code(OBSERVATION_CATEGORY, "procedure", "Procedure")

HEART_RATE = Code(LOINC, "8867-4", "Heart rate")
SPO2 = Code(LOINC, "59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry")
# The R4 oxygen saturation profile requires 2708-6 beside the pulse-oximetry code.
SPO2_ARTERIAL = Code(LOINC, "2708-6", "Oxygen saturation in Arterial blood")
BODY_TEMPERATURE = Code(LOINC, "8310-5", "Body temperature")
BP_PANEL = Code(LOINC, "85354-9", "Blood pressure panel with all children optional")
SYSTOLIC = Code(LOINC, "8480-6", "Systolic blood pressure")
DIASTOLIC = Code(LOINC, "8462-4", "Diastolic blood pressure")

# Heart rate: a wearable or a bedside monitor counts the pulse (photoplethysmography or the
# oximeter's pleth wave), which 11073 names MDC_PULS_RATE; only an ECG patch derives the rate
# from the heart's electrical activity, MDC_ECG_HEART_RATE.
MDC_PULS_RATE = Code(MDC, "149514", "MDC_PULS_RATE")
MDC_ECG_HEART_RATE = Code(MDC, "147842", "MDC_ECG_HEART_RATE")
MDC_PULS_OXIM_SAT_O2 = Code(MDC, "150456", "MDC_PULS_OXIM_SAT_O2")
MDC_TEMP_BODY = Code(MDC, "150364", "MDC_TEMP_BODY")
MDC_PRESS_BLD_NONINV = Code(MDC, "150020", "MDC_PRESS_BLD_NONINV")
MDC_PRESS_BLD_NONINV_SYS = Code(MDC, "150021", "MDC_PRESS_BLD_NONINV_SYS")
MDC_PRESS_BLD_NONINV_DIA = Code(MDC, "150022", "MDC_PRESS_BLD_NONINV_DIA")
# The plaintext says how many leads, not which: the unspecified-lead potential (the per-lead
# codes, 131329 lead I onwards, would claim a placement the device never told).
MDC_ECG_ELEC_POTL = Code(MDC, "131328", "MDC_ECG_ELEC_POTL")


def heart_rate_mdc(device_class: int) -> Code:
    return MDC_ECG_HEART_RATE if device_class == pt.ECG_PATCH else MDC_PULS_RATE


@dataclass(frozen=True)
class Rule:
    """What an Observation of one kind must carry: its codes, and its unit (or its
    components' codes and unit)."""

    name: str
    loinc: frozenset[str]
    mdc: frozenset[str]
    category: str
    unit: str | None  # UCUM code of valueQuantity; None: no valueQuantity
    components: tuple[tuple[str, str], ...] = ()  # (LOINC, MDC) per component
    component_unit: str | None = None
    code_is_sampled: bool = False  # the value is valueSampledData in microvolts


# Keyed by the Observation's primary code (its first coding): the LOINC code of a vital, the
# MDC code of an ECG strip (LOINC has no code for one raw strip).
RULES: dict[str, Rule] = {
    HEART_RATE.code: Rule("heart rate", frozenset({HEART_RATE.code}),
                          frozenset({MDC_PULS_RATE.code, MDC_ECG_HEART_RATE.code}),
                          VITAL_SIGNS.code, PER_MIN.code),
    SPO2.code: Rule("SpO2", frozenset({SPO2.code, SPO2_ARTERIAL.code}),
                    frozenset({MDC_PULS_OXIM_SAT_O2.code}), VITAL_SIGNS.code, PERCENT.code),
    BODY_TEMPERATURE.code: Rule("body temperature", frozenset({BODY_TEMPERATURE.code}),
                                frozenset({MDC_TEMP_BODY.code}), VITAL_SIGNS.code,
                                CELSIUS.code),
    BP_PANEL.code: Rule("blood pressure", frozenset({BP_PANEL.code}),
                        frozenset({MDC_PRESS_BLD_NONINV.code}), VITAL_SIGNS.code, None,
                        ((SYSTOLIC.code, MDC_PRESS_BLD_NONINV_SYS.code),
                         (DIASTOLIC.code, MDC_PRESS_BLD_NONINV_DIA.code)), MM_HG.code),
    MDC_ECG_ELEC_POTL.code: Rule("ECG", frozenset(), frozenset({MDC_ECG_ELEC_POTL.code}),
                                 PROCEDURE.code, None, code_is_sampled=True),
}

DEVICE_TYPES = {  # Device.type as text only: no SNOMED CT concept we are sure fits each class
    pt.WEARABLE: "Wearable vital signs monitor",
    pt.BEDSIDE_MONITOR: "Bedside patient monitor",
    pt.THERMOMETER: "Clinical thermometer",
    pt.ECG_PATCH: "ECG patch",
}


def _codes(concept: object, system: str) -> list[str]:
    codings = concept.get("coding") if isinstance(concept, dict) else None
    return [c["code"] for c in codings if isinstance(c, dict) and c.get("system") == system
            and isinstance(c.get("code"), str)] if isinstance(codings, list) else []


def _unit_problem(holder: dict, want: str, what: str) -> list[str]:
    quantity = holder.get("valueQuantity")
    if not isinstance(quantity, dict):
        return [f"{what} has no valueQuantity"]
    if quantity.get("system") != UCUM or quantity.get("code") != want:
        return [f"{what} unit is {quantity.get('system')}|{quantity.get('code')}, "
                f"not {UCUM}|{want}"]
    return []


def observation_problems(obs: dict) -> list[str]:
    """What is wrong with an Observation's codes, category and units, by the rule of the kind
    its first coding names; empty when nothing is."""
    code = obs.get("code")
    codings = code.get("coding") if isinstance(code, dict) else None
    first = codings[0] if isinstance(codings, list) and codings else {}
    primary = first.get("code") if isinstance(first, dict) else None
    rule = RULES.get(primary) if isinstance(primary, str) else None
    if rule is None:
        return [f"code {first!r} is none of the export's codes "
                f"(LOINC {sorted(r for r in RULES if '-' in r)} or MDC_ECG_ELEC_POTL)"]
    problems = []
    loinc, mdc = set(_codes(code, LOINC)), set(_codes(code, MDC))
    if loinc != rule.loinc:
        problems.append(f"{rule.name}: LOINC codes {sorted(loinc)}, not {sorted(rule.loinc)}")
    if len(mdc) != 1 or not mdc <= rule.mdc:
        problems.append(f"{rule.name}: IEEE 11073 codes {sorted(mdc)}, not one of "
                        f"{sorted(rule.mdc)}")
    categories = obs.get("category")
    if not isinstance(categories, list) or not any(
            rule.category in _codes(c, OBSERVATION_CATEGORY) for c in categories):
        problems.append(f"{rule.name}: no category {rule.category}")
    if rule.unit is not None:
        problems += _unit_problem(obs, rule.unit, rule.name)
    components = obs.get("component") or []
    if rule.components:
        problems += _component_problems(rule, components)
    elif components:
        problems.append(f"{rule.name}: has components")
    if rule.code_is_sampled and not isinstance(obs.get("valueSampledData"), dict):
        problems.append(f"{rule.name}: no valueSampledData")
    elif rule.code_is_sampled:
        origin = obs["valueSampledData"].get("origin")
        if not isinstance(origin, dict) or origin.get("system") != UCUM or (
                origin.get("code") != MICROVOLT.code):
            problems.append(f"{rule.name}: origin is not in {UCUM}|{MICROVOLT.code}")
    return problems


def _component_problems(rule: Rule, components: object) -> list[str]:
    if not isinstance(components, list) or len(components) != len(rule.components):
        return [f"{rule.name}: components are not {len(rule.components)}"]
    problems = []
    for component, (loinc, mdc) in zip(components, rule.components, strict=True):
        code = component.get("code") if isinstance(component, dict) else None
        got = (_codes(code, LOINC), _codes(code, MDC))
        if got != ([loinc], [mdc]):
            problems.append(f"{rule.name}: component codes {got}, not LOINC {loinc} MDC {mdc}")
        elif rule.component_unit is not None:
            problems += _unit_problem(component, rule.component_unit,
                                      f"{rule.name} component {loinc}")
    return problems
