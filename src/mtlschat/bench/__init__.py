"""mtlschat.bench"""
