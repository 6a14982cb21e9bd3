from tests.helpers import bearer, signup


def test_signup_then_me(client):
    tokens = signup(client)
    response = client.get("/me", headers=bearer(tokens["access_token"]))
    assert response.status_code == 200
    assert response.get_json()["username"] == "alice"
