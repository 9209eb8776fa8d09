from parties.storage import stored_file
from tests import factories


def test_an_owner_uploads_a_dataset_and_it_is_stored_encrypted_in_its_jurisdiction(
    world, patients_csv
):
    version = factories.dataset(world.charite, world.alice, patients_csv, jurisdiction="CH")
    path = stored_file(version)
    assert path.parts[-4] == "ch"
    stored = path.read_bytes()
    for cell in ("circulatory", "person_hash", "65+"):
        assert cell.encode() not in stored
    assert version.row_count == 200
