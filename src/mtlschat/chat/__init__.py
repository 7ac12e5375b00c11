"""mtlschat.chat"""
